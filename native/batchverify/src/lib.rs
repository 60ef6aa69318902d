//! `kubewrit_batchverify._batchverify.verify_all`: do all these Ed25519 signatures verify?
//!
//! One batch equation over random multiples of every signature's terms (ed25519-consensus):
//! a chain's signatures all share one key, whose terms fold into one, so a batch costs a
//! fraction of checking each. It answers for the batch only; a caller that hears "no" checks
//! each signature itself to learn which failed.
use ed25519_consensus::{batch, Signature, VerificationKeyBytes};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;

const KEY_BYTES: usize = 32;
const SIGNATURE_BYTES: usize = 64;

/// True if every signature verifies its message under `key` (raw, 32 bytes); False if
/// any does not, or is not 64 bytes. ValueError if the lists differ in length or the
/// key is not 32 bytes: a caller's mistake, not a finding.
#[pyfunction]
fn verify_all(
    py: Python<'_>,
    key: &[u8],
    signatures: Vec<PyBackedBytes>,
    messages: Vec<PyBackedBytes>,
) -> PyResult<bool> {
    let key: [u8; KEY_BYTES] = key
        .try_into()
        .map_err(|_| PyValueError::new_err("an Ed25519 public key is 32 bytes"))?;
    if signatures.len() != messages.len() {
        return Err(PyValueError::new_err("one message per signature"));
    }
    let key = VerificationKeyBytes::from(key);
    Ok(py.allow_threads(|| {
        let mut verifier = batch::Verifier::new();
        for (signature, message) in signatures.iter().zip(&messages) {
            let Ok(signature) = <[u8; SIGNATURE_BYTES]>::try_from(&signature[..]) else {
                return false;
            };
            verifier.queue((key, Signature::from(signature), &message[..]));
        }
        verifier.verify(rand::thread_rng()).is_ok()
    }))
}

#[pymodule]
fn _batchverify(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(verify_all, module)?)
}
