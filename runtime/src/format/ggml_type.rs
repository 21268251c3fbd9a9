//! Tensor element types as numbered in GGUF (ggml's `ggml_type`), with their block geometry.
//!
//! A quantized type stores `block_len` consecutive elements of a row in `block_bytes` bytes.
//! Rows (the first, fastest-varying dimension `ne[0]`) must be a whole number of blocks.

use std::fmt;

/// A GGUF tensor type id we recognise. Recognising a type is not supporting it:
/// [`GgmlType::is_supported`] says which ones the runtime can compute with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    I8,
    I16,
    I32,
    I64,
    F64,
    BF16,
    TQ1_0,
    TQ2_0,
    Iq4Nl,
    Iq4Xs,
    /// suanpan: a [`LutMatrix`](crate::lut::LutMatrix) in its serialized form (bit planes in
    /// kernel order, then f16 scales and zeros). `dims = [cols, rows]`; rows are padded to
    /// whole 32-row chunks in the data. Type id `1000 + 10·bits + g` with `g` = 0, 1, 2 for
    /// groups of 32, 64, 128.
    Lut {
        bits: u8,
        group: u16,
    },
    /// suanpan: a DFloat11 blob (see [`crate::dfloat`]); `dims = [blob bytes]`, the logical
    /// shape is in the metadata key `suanpan.df11.dims.<tensor name>`. Type id 1100.
    Df11,
    /// suanpan: a df12 blob (see [`crate::dfloat::df12`]); stored as a [`GgmlType::Df11`] blob is
    /// (`dims = [blob bytes]`, logical shape in `suanpan.df11.dims.<tensor name>`). Type id 1101.
    Df12,
}

/// First type id suanpan uses for its own tensor types (ggml's ids stay far below).
pub const SUANPAN_TYPE_BASE: u32 = 1000;
/// Type id of [`GgmlType::Df11`].
pub const DF11_TYPE_ID: u32 = 1100;
/// Type id of [`GgmlType::Df12`].
pub const DF12_TYPE_ID: u32 = 1101;

impl GgmlType {
    /// Map a GGUF type id to a type, `None` when the id is unknown.
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => Q8K,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            20 => Iq4Nl,
            23 => Iq4Xs,
            DF11_TYPE_ID => Df11,
            DF12_TYPE_ID => Df12,
            1010..=1042 => {
                let (bits, g) = ((id - SUANPAN_TYPE_BASE) / 10, (id - SUANPAN_TYPE_BASE) % 10);
                if !(1..=4).contains(&bits) || g > 2 {
                    return None;
                }
                Lut {
                    bits: bits as u8,
                    group: 32 << g,
                }
            }
            _ => return None,
        })
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2K => 10,
            Q3K => 11,
            Q4K => 12,
            Q5K => 13,
            Q6K => 14,
            Q8K => 15,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            Iq4Nl => 20,
            Iq4Xs => 23,
            Lut { bits, group } => {
                SUANPAN_TYPE_BASE + 10 * bits as u32 + (group as u32 / 32).trailing_zeros()
            }
            Df11 => DF11_TYPE_ID,
            Df12 => DF12_TYPE_ID,
        }
    }

    /// (elements per block, bytes per block).
    pub fn block_geometry(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
            TQ1_0 => (256, 54),
            TQ2_0 => (256, 66),
            Iq4Nl => (32, 18),
            Iq4Xs => (256, 136),
            // Per row, ignoring the padding to 32-row chunks (see `tensor_bytes`).
            Lut { bits, group } => (group as usize, bits as usize * group as usize / 8 + 4),
            Df11 | Df12 => (1, 1),
        }
    }

    /// Elements per block.
    pub fn block_len(self) -> usize {
        self.block_geometry().0
    }

    /// Bytes for `n` elements, `None` if `n` is not a whole number of blocks or overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let (bl, bb) = self.block_geometry();
        if !n.is_multiple_of(bl as u64) {
            return None;
        }
        (n / bl as u64).checked_mul(bb as u64)
    }

    /// Bytes of a tensor of shape `dims` (`dims[0]` fastest), `None` if the shape does not
    /// fit the type or the size overflows.
    pub fn tensor_bytes(self, dims: &[u64]) -> Option<u64> {
        let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
        match self {
            GgmlType::Lut { bits, group } => {
                let rows = dims[1..].iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
                crate::lut::layout::serialized_len(bits as usize, group as usize, rows, dims[0])
            }
            _ => {
                if dims
                    .first()
                    .is_some_and(|d| d % self.block_len() as u64 != 0)
                {
                    return None;
                }
                self.bytes_for(n)
            }
        }
    }

    /// Whether the runtime can load and compute with tensors of this type.
    pub fn is_supported(self) -> bool {
        use GgmlType::*;
        matches!(self, Lut { .. } | Df11 | Df12) || self.can_dequantize()
    }

    /// Whether only the CPU backend computes with this type (no WGSL kernel yet). Which of
    /// them have SIMD kernels on this machine: [`crate::backend::cpu::dot::has_simd`].
    pub fn cpu_only(self) -> bool {
        self.is_supported()
            && !matches!(
                self,
                GgmlType::F32
                    | GgmlType::F16
                    | GgmlType::BF16
                    | GgmlType::Q8_0
                    | GgmlType::Q4_0
                    | GgmlType::Q4_1
                    | GgmlType::Q5_0
                    | GgmlType::Q5_1
                    | GgmlType::Q2K
                    | GgmlType::Q3K
                    | GgmlType::Q4K
                    | GgmlType::Q5K
                    | GgmlType::Q6K
                    | GgmlType::Iq4Nl
                    | GgmlType::Iq4Xs
                    | GgmlType::TQ1_0
                    | GgmlType::TQ2_0
                    | GgmlType::Lut { .. }
                    | GgmlType::Df11
                    | GgmlType::Df12
            )
    }

    /// Whether a scalar reference dequantizer exists for this type
    /// ([`crate::quant::ggml::dequantize_row`]): such tensors can be read by the converter
    /// and inspected, even where the runtime cannot compute with them yet.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16
                | BF16
                | Q8_0
                | Q4_0
                | Q4_1
                | Q5_0
                | Q5_1
                | Q2K
                | Q3K
                | Q4K
                | Q5K
                | Q6K
                | Iq4Nl
                | Iq4Xs
                | TQ1_0
                | TQ2_0
        )
    }

    /// The name llama.cpp prints for this type.
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            Iq4Nl => "IQ4_NL",
            Iq4Xs => "IQ4_XS",
            Lut { bits, group } => match (bits, group) {
                (1, 32) => "LUT1_G32",
                (1, 64) => "LUT1_G64",
                (1, _) => "LUT1_G128",
                (2, 32) => "LUT2_G32",
                (2, 64) => "LUT2_G64",
                (2, _) => "LUT2_G128",
                (3, 32) => "LUT3_G32",
                (3, 64) => "LUT3_G64",
                (3, _) => "LUT3_G128",
                (_, 32) => "LUT4_G32",
                (_, 64) => "LUT4_G64",
                _ => "LUT4_G128",
            },
            Df11 => "DF11",
            Df12 => "DF12",
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
