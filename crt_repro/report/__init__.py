"""Paper tables and figures: the paper's value beside ours (``crt-repro table|figure``)."""
