"""Programs shared by several test files (the SPEC section 2 example, verbatim)."""

SPEC_EXAMPLE = """\
# NVFP4-style block quantisation: e2m1 codes, one e4m3 scale per 16 values.
const FP4_MAX: f32 = 6.0

fn quantize(x: f32[M, N] in [-1000, 1000]) -> (e2m1[M, N], e4m3[M, N/16], f32)
    requires N % 16 == 0
{
    let amax = max(abs(x))                                   # whole-tensor reduction
    let s_enc = 448.0 * FP4_MAX / amax
    let s_dec = 1.0 / s_enc
    let xb = reshape(x, [M, N/16, 16])
    let s = round(max(abs(xb), axis=-1) * s_enc / FP4_MAX, e4m3)      # RNE, saturating
    let q = round(xb / (s[:, :, None] as f32 * s_dec), e2m1)
    return (reshape(q, [M, N]), s, s_dec)
}

fn sr_quantize(x: f32[N] in [-6, 6]) -> e2m1[N] ! {rand} {
    return round(x, e2m1, mode=sr)                            # stochastic: needs the rand effect
}
"""
