//! DFloat11 → df12 at load: DF11 stays the storage and download form, df12 the form the
//! CPU GEMV reads (the bit patterns pass through unchanged).

use crate::backend::cpu::dfloat::Df11Decoder;
use crate::dfloat::df12::{encode, Df12Tensor};
use crate::dfloat::Df11View;
use crate::error::Result;

/// Decode DF11 tensor `t` and re-encode it as df12 (lossless both ways), on the calling
/// thread (a model's matrices are transcoded in parallel, one per thread). Peak extra
/// memory: the tensor as BF16 for the time of the call.
pub fn transcode_df11(dec: &Df11Decoder, t: Df11View<'_>) -> Result<Df12Tensor> {
    let mut bf16 = vec![0u16; t.n];
    dec.decode_into(t, &mut bf16)?;
    Ok(encode(&bf16))
}
