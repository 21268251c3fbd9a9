//! Model file formats: GGUF (read and write) and the tensor types it names.

pub mod ggml_type;
pub mod gguf;

pub use ggml_type::GgmlType;
pub use gguf::{GgufFile, GgufWriter, TensorInfo, Value};
