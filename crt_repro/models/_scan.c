/* The gated recurrence of scan.py in C: its forward loop (_scan_forward) and BPTT's sequential
 * loop (_scan_backward's), for model.rnn_scan=native in training and for streaming a few sequences.
 *
 * At batch 1 a step of the Python scan is one [1,H]x[H,3H] product and a few elementwise ops,
 * each dispatched from Python for several microseconds; the arithmetic is ~3H^2 multiply-adds.
 * Here the time loop is in C and each step's product advances ROWS streams per pass over the
 * recurrent matrix: ROWS x COLS sums held in vector registers while the matrix's rows stream by
 * (_rows_gemm; the matrix stays in L2 across the steps of a segment, and its read from there is
 * what a step costs), then one vectorised pass over the gates.
 * Same equations, same gate order z | r | candidate as the Python scan, on its time-major buffers:
 * _train is _scan_forward: xt [T,B,3H] input projections with their biases, h0 [B,H] (copied into
 * states[0]), w [H,3H] (applied as h @ w), b_hh [3H] or NULL, b_mod [H] (modReLU) or NULL (tanh);
 * it writes states [T+1,B,H] and, where save, pre [T,B,3H] z | r | c and, where keep_g (reset
 * after), g [T,B,3H] each step's recurrent products with b_hh; otherwise pre and g are [ROWS,3H]
 * scratch.
 * _step is one step of B streams with its input product, for a decoded token: x [B,I], w_in
 * [I,3H], b_in [3H]; xp [B,3H] and scratch [2,ROWS,3H] are its buffers, states [2,B,H] as _train's.
 * _bptt is _scan_backward's loop: k [T,B,3H] the coefficients from dh_t to d(pre-activations) |
 * d(g_c) (reset before, the middle third is k_r, see scan.py), pre as above (z, r), d_out
 * [T,B,H] and w_t [3H,H] the recurrent matrix transposed; it writes d_h [T,B,H], d_g [T,B,3H],
 * carry [B,H] (the gradient on h0) and uses scratch [2,ROWS,H].
 * Compiled at first use by native_scan.py; no torch headers, so the build takes about a second.
 */
#include <math.h>
#include <stddef.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
/* glibc's libmvec has vector variants of exp; declaring them lets the gate loops vectorise
 * (tanh is written with exp below for the same reason: libmvec's tanh is only in glibc >= 2.35). */
float expf(float) __attribute__((__simd__("notinbranch")));
double exp(double) __attribute__((__simd__("notinbranch")));
#endif

#define ROWS 8
#define COLS 32
#define WIDE (4 * COLS) /* the columns of a block of one row */
#define DEFINE_SCAN(NAME, T, EXP)                                                                 \
static T NAME##_act(T v, const T *b_mod, long j) {                                                \
    /* the candidate: tanh(v) = 2 sigmoid(2v) - 1 (GRU), or modReLU(v) = sign(v) relu(|v| + b_mod) */ \
    if (!b_mod) return (T)2 / ((T)1 + EXP(-2 * v)) - (T)1;                                        \
    T m = (v < 0 ? -v : v) + b_mod[j];                                                            \
    m = m > 0 ? m : (T)0;                                                                         \
    return v > 0 ? m : (v < 0 ? -m : (T)0);                                                       \
}                                                                                                 \
                                                                                                  \
static inline __attribute__((always_inline)) void NAME##_block(long rows_, long width,            \
        const T *restrict a, long lda, long n, const T *restrict b, long ldb, long j,             \
        const T *restrict bias, T *restrict out, long ldo) {                                      \
    /* out[r, j:j+width] = bias + a[r, :n] @ b[:n, j:j+width] for r < rows_, rows_ x width <=     \
     * ROWS x COLS sums held in vector registers while b's rows stream by (both sizes are         \
     * constants at the full blocks' call sites, so that the loops compile to whole registers) */ \
    T acc[ROWS * COLS];                                                                           \
    for (long r = 0; r < rows_; r++)                                                              \
        for (long k = 0; k < width; k++) acc[r * width + k] = bias ? bias[j + k] : (T)0;          \
    for (long i = 0; i < n; i++) {                                                                \
        const T *row = b + i * ldb + j;                                                           \
        for (long r = 0; r < rows_; r++) {                                                        \
            const T ai = a[r * lda + i];                                                          \
            for (long k = 0; k < width; k++) acc[r * width + k] += ai * row[k];                   \
        }                                                                                         \
    }                                                                                             \
    for (long r = 0; r < rows_; r++)                                                              \
        for (long k = 0; k < width; k++) out[r * ldo + j + k] = acc[r * width + k];               \
}                                                                                                 \
                                                                                                  \
static void NAME##_rows_gemm(long rows, const T *a, long lda, long n, const T *b, long ldb,       \
                             long j0, long j1, const T *bias, T *out, long ldo) {                 \
    /* out[r, j0:j1] = bias + a[r, :n] @ b[:n, j0:j1] for r < rows (bias may be NULL): ROWS rows  \
     * at a time in COLS-column blocks, a row left over in WIDE-column ones (COLS sums of one row \
     * are too few independent chains to keep the multiply-add units busy: a decoded token's step \
     * is one row) */                                                                             \
    long r = 0;                                                                                   \
    for (; r + ROWS <= rows; r += ROWS) {                                                         \
        long j = j0;                                                                              \
        for (; j + COLS <= j1; j += COLS)                                                         \
            NAME##_block(ROWS, COLS, a + r * lda, lda, n, b, ldb, j, bias, out + r * ldo, ldo);   \
        if (j < j1)                                                                               \
            NAME##_block(ROWS, j1 - j, a + r * lda, lda, n, b, ldb, j, bias, out + r * ldo, ldo); \
    }                                                                                             \
    for (; r < rows; r++) {                                                                       \
        long j = j0;                                                                              \
        for (; j + WIDE <= j1; j += WIDE)                                                         \
            NAME##_block(1, WIDE, a + r * lda, lda, n, b, ldb, j, bias, out + r * ldo, ldo);      \
        for (; j + COLS <= j1; j += COLS)                                                         \
            NAME##_block(1, COLS, a + r * lda, lda, n, b, ldb, j, bias, out + r * ldo, ldo);      \
        if (j < j1)                                                                               \
            NAME##_block(1, j1 - j, a + r * lda, lda, n, b, ldb, j, bias, out + r * ldo, ldo);    \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
void NAME##_train(long batch, long steps, long h_dim, const T *xt, const T *h0, const T *w,       \
                  const T *b_hh, const T *b_mod, int before, int save, int keep_g, T *states,     \
                  T *pre, T *g) {                                                                 \
    const long h3 = 3 * h_dim;                                                                    \
    for (long i = 0; i < batch * h_dim; i++) states[i] = h0[i];                                   \
    for (long b0 = 0; b0 < batch; b0 += ROWS) {                                                   \
        const long rows = batch - b0 < ROWS ? batch - b0 : ROWS;                                  \
        for (long t = 0; t < steps; t++) {                                                        \
            const long at = t * batch + b0;                                                       \
            const T *x = xt + at * h3, *h = states + at * h_dim;                                  \
            T *hn = states + (at + batch) * h_dim;                                                \
            T *p = save ? pre + at * h3 : pre, *gg = keep_g ? g + at * h3 : g;                    \
            NAME##_rows_gemm(rows, h, h_dim, h_dim, w, h3, 0, before ? 2 * h_dim : h3, b_hh, gg, h3); \
            for (long r = 0; r < rows; r++)                                                       \
                for (long j = 0; j < 2 * h_dim; j++)                                              \
                    p[r * h3 + j] = (T)1 / ((T)1 + EXP(-(x[r * h3 + j] + gg[r * h3 + j])));       \
            if (before) { /* g_c = (r * h) @ w_c: r * h goes into hn, overwritten below */        \
                for (long r = 0; r < rows; r++)                                                   \
                    for (long j = 0; j < h_dim; j++)                                              \
                        hn[r * h_dim + j] = p[r * h3 + h_dim + j] * h[r * h_dim + j];             \
                NAME##_rows_gemm(rows, hn, h_dim, h_dim, w, h3, 2 * h_dim, h3, b_hh, gg, h3);     \
            }                                                                                     \
            for (long r = 0; r < rows; r++) {                                                     \
                const T *xr = x + r * h3, *gr = gg + r * h3, *hr = h + r * h_dim;                 \
                T *pr = p + r * h3, *hnr = hn + r * h_dim;                                        \
                for (long j = 0; j < h_dim; j++) {                                                \
                    const T gc = gr[2 * h_dim + j];                                               \
                    const T c = NAME##_act(xr[2 * h_dim + j] + (before ? gc : pr[h_dim + j] * gc), \
                                           b_mod, j);                                             \
                    pr[2 * h_dim + j] = c;                                                        \
                    hnr[j] = c + pr[j] * (hr[j] - c);                                             \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
void NAME##_step(long batch, long in_dim, long h_dim, const T *x, const T *w_in, const T *b_in,   \
                 const T *h0, const T *w, const T *b_hh, const T *b_mod, int before, T *states,   \
                 T *xp, T *scratch) {                                                             \
    /* xp = b_in + x @ w_in first, in the same call, so that a decoded token pays one call, not an \
     * input product besides */                                                                   \
    NAME##_rows_gemm(batch, x, in_dim, in_dim, w_in, 3 * h_dim, 0, 3 * h_dim, b_in, xp, 3 * h_dim); \
    NAME##_train(batch, 1, h_dim, xp, h0, w, b_hh, b_mod, before, 0, 0, states, scratch,          \
                 scratch + ROWS * 3 * h_dim);                                                     \
}                                                                                                 \
                                                                                                  \
void NAME##_bptt(long batch, long steps, long h_dim, const T *d_out, const T *k, const T *pre,    \
                 const T *w_t, int before, T *d_h, T *d_g, T *carry, T *scratch) {                \
    const long h3 = 3 * h_dim;                                                                    \
    T *d_rh = scratch, *dh_w = scratch + ROWS * h_dim;                                            \
    for (long i = 0; i < batch * h_dim; i++) carry[i] = 0;                                        \
    for (long b0 = 0; b0 < batch; b0 += ROWS) {                                                   \
        const long rows = batch - b0 < ROWS ? batch - b0 : ROWS;                                  \
        T *c = carry + b0 * h_dim;                                                                \
        for (long t = steps - 1; t >= 0; t--) {                                                   \
            const long at = t * batch + b0;                                                       \
            const T *kk = k + at * h3, *z = pre + at * h3;                                        \
            T *dh = d_h + at * h_dim, *dg = d_g + at * h3;                                        \
            for (long i = 0; i < rows * h_dim; i++) dh[i] = d_out[at * h_dim + i] + c[i];         \
            for (long r = 0; r < rows; r++)                                                       \
                for (long s = 0; s < 3; s++)                                                      \
                    for (long i = 0; i < h_dim; i++)                                              \
                        dg[r * h3 + s * h_dim + i] = kk[r * h3 + s * h_dim + i] * dh[r * h_dim + i]; \
            if (before) {                                                                         \
                NAME##_rows_gemm(rows, dg + 2 * h_dim, h3, h_dim, w_t + 2 * h_dim * h_dim, h_dim, 0, h_dim, NULL, d_rh, h_dim); \
                for (long r = 0; r < rows; r++)                                                   \
                    for (long i = 0; i < h_dim; i++)                                              \
                        dg[r * h3 + h_dim + i] = d_rh[r * h_dim + i] * kk[r * h3 + h_dim + i];    \
            }                                                                                     \
            NAME##_rows_gemm(rows, dg, h3, before ? 2 * h_dim : h3, w_t, h_dim, 0, h_dim, NULL, dh_w, h_dim); \
            for (long r = 0; r < rows; r++)                                                       \
                for (long i = 0; i < h_dim; i++) {                                                \
                    T v = dh_w[r * h_dim + i] + dh[r * h_dim + i] * z[r * h3 + i];                \
                    if (before) v += d_rh[r * h_dim + i] * z[r * h3 + h_dim + i];                 \
                    c[r * h_dim + i] = v;                                                         \
                }                                                                                 \
        }                                                                                         \
    }                                                                                             \
}

DEFINE_SCAN(gated_scan_f32, float, expf)
DEFINE_SCAN(gated_scan_f64, double, exp)

long gated_scan_rows(void) { return ROWS; } /* the caller sizes the scratch of _train, _step and _bptt by it */
