//! DFloat11 → df12 at load: DF11 stays the storage and download form, df12 the form the
//! CPU GEMV reads (the bit patterns pass through unchanged).

use super::{encode, Df12Tensor};
use crate::backend::cpu::pool::Pool;
use crate::dfloat::{decode_pool, Df11Decoder, Df11View};
use crate::error::Result;

/// Decode DF11 tensor `t` on `pool` and re-encode it as df12 (lossless both ways). Peak
/// extra memory: the tensor as BF16 for the time of the call.
pub fn transcode_df11(pool: &Pool, dec: &Df11Decoder, t: Df11View<'_>) -> Result<Df12Tensor> {
    let mut bf16 = vec![0u16; t.n];
    decode_pool(pool, dec, t, &mut bf16)?;
    Ok(encode(&bf16))
}
