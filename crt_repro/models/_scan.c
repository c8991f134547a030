/* The gated recurrence of rnn.py (_scan_forward) for inference: the whole time loop in C.
 *
 * At batch 1 a step of the Python scan is one [1,H]x[H,3H] product and a few elementwise ops,
 * each dispatched from Python for several microseconds; the arithmetic is ~3H^2 multiply-adds.
 * Here a step is one pass over the recurrent matrix (64 output columns at a time accumulated in
 * vector registers over all rows; the matrix stays in L2 across the steps of a segment, and its
 * read from there is what a step costs) and one vectorised pass over the gates.
 * Same equations, same gate order z | r | candidate, same layouts as the Python scan:
 *   xp [B,T,3H] input projections with their biases, h0 [B,H], w [H,3H] (applied as h @ w),
 *   b_hh [3H] or NULL, b_mod [H] (modReLU) or NULL (tanh), out [B,T,H], g [3H] scratch.
 * _step is one step with the input product (a decoded token: x [B,I], w_in [I,3H], b_in [3H]).
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

#define DEFINE_SCAN(NAME, T, EXP)                                                            \
static void NAME##_gemv(const T *restrict h, const T *restrict w, long h_dim, long ld, long j0,        \
                        long j1, const T *restrict bias, T *restrict g) {                          \
    /* g[j0:j1] = bias + h @ w[:, j0:j1], JB columns at a time held in registers over all rows */  \
    enum { JB = 64 };                                                                             \
    long j = j0;                                                                                  \
    for (; j + JB <= j1; j += JB) {                                                               \
        T acc[JB];                                                                                \
        for (long k = 0; k < JB; k++) acc[k] = bias ? bias[j + k] : (T)0;                         \
        for (long i = 0; i < h_dim; i++) {                                                        \
            const T hi = h[i];                                                                    \
            const T *row = w + i * ld + j;                                                        \
            for (long k = 0; k < JB; k++) acc[k] += hi * row[k];                                  \
        }                                                                                         \
        for (long k = 0; k < JB; k++) g[j + k] = acc[k];                                          \
    }                                                                                             \
    for (; j < j1; j++) {                                                                         \
        T acc = bias ? bias[j] : (T)0;                                                            \
        for (long i = 0; i < h_dim; i++) acc += h[i] * w[i * ld + j];                             \
        g[j] = acc;                                                                               \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
void NAME(long batch, long steps, long h_dim, const T *xp, const T *h0, const T *w,              \
          const T *b_hh, const T *b_mod, int before, T *out, T *g) {                              \
    const long h3 = 3 * h_dim;                                                                    \
    for (long b = 0; b < batch; b++) {                                                            \
        const T *h = h0 + b * h_dim;                                                              \
        for (long t = 0; t < steps; t++) {                                                        \
            const T *x = xp + (b * steps + t) * h3;                                               \
            T *hn = out + (b * steps + t) * h_dim;                                                \
            /* z and r need h @ w[:, :2H] either way; reset after, the candidate's product too */ \
            NAME##_gemv(h, w, h_dim, h3, 0, before ? 2 * h_dim : h3, b_hh, g);                    \
            for (long j = 0; j < 2 * h_dim; j++) g[j] = (T)1 / ((T)1 + EXP(-(x[j] + g[j])));     \
            if (before) { /* g_c = (r * h) @ w_c: r * h goes into hn, overwritten below */        \
                for (long j = 0; j < h_dim; j++) hn[j] = g[h_dim + j] * h[j];                     \
                NAME##_gemv(hn, w, h_dim, h3, 2 * h_dim, h3, b_hh, g);                            \
            }                                                                                     \
            for (long j = 0; j < h_dim; j++) {                                                    \
                const T gc = g[2 * h_dim + j];                                                    \
                T v = x[2 * h_dim + j] + (before ? gc : g[h_dim + j] * gc);                       \
                T c;                                                                              \
                if (b_mod) { /* modReLU(v) = sign(v) relu(|v| + b_mod) */                        \
                    T m = (v < 0 ? -v : v) + b_mod[j];                                            \
                    m = m > 0 ? m : (T)0;                                                         \
                    c = v > 0 ? m : (v < 0 ? -m : (T)0);                                          \
                } else {                                                                          \
                    c = (T)2 / ((T)1 + EXP(-2 * v)) - (T)1; /* tanh(v) = 2 sigmoid(2v) - 1 */      \
                }                                                                                 \
                const T z = g[j];                                                                 \
                hn[j] = c + z * (h[j] - c); /* torch.lerp(c, h, z) */                             \
            }                                                                                     \
            h = hn;                                                                               \
        }                                                                                         \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
void NAME##_step(long batch, long in_dim, long h_dim, const T *x, const T *w_in, const T *b_in,      \
                 const T *h0, const T *w, const T *b_hh, const T *b_mod, int before, T *out, T *g,  \
                 T *xp) {                                                                         \
    /* One step of B streams from inputs x [B,I]: xp = b_in + x @ w_in (w_in [I,3H]) first, in   \
     * the same call, so that a decoded token pays one call, not an input product besides. */    \
    for (long b = 0; b < batch; b++) {                                                            \
        NAME##_gemv(x + b * in_dim, w_in, in_dim, 3 * h_dim, 0, 3 * h_dim, b_in, xp);             \
        NAME(1, 1, h_dim, xp, h0 + b * h_dim, w, b_hh, b_mod, before, out + b * h_dim, g);       \
    }                                                                                             \
}

DEFINE_SCAN(gated_scan_f32, float, expf)
DEFINE_SCAN(gated_scan_f64, double, exp)
