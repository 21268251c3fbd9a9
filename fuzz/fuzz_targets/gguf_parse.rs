//! Fuzz the GGUF reader: any byte string must parse to `Ok` or `Err(BadModel)`, never panic,
//! never allocate out of proportion to the input. When it parses, every accessor must work
//! on what it returned (tensor data slices in bounds and of the advertised size).
#![no_main]

use libfuzzer_sys::fuzz_target;
use suanpan::format::GgufFile;
use suanpan::Error;

fuzz_target!(|data: &[u8]| {
    match GgufFile::from_bytes(data.to_vec()) {
        Err(Error::BadModel(msg)) => assert!(!msg.is_empty()),
        Err(other) => panic!("parse error of the wrong kind: {other:?}"),
        Ok(f) => {
            assert!(f.version == 2 || f.version == 3);
            assert!(f.alignment.is_power_of_two());
            for (key, value) in &f.metadata {
                // By address: a float may be NaN, which is not equal to itself.
                assert!(std::ptr::eq(f.get(key).unwrap(), value));
                let _ = value.summary();
                let _ = f.get_u64(key);
                let _ = f.get_f64(key);
            }
            for t in &f.tensors {
                assert_eq!(f.tensor(&t.name), Some(t));
                assert_eq!(t.offset % f.alignment, 0);
                let _ = t.n_elements();
                let bytes = f.tensor_data(t);
                assert_eq!(bytes.len() as u64, t.size);
            }
        }
    }
});
