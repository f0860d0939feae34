//! `hermes_results::decode` on arbitrary bytes: the operator's parser of the
//! termination message, which a compromised pod controls entirely.
//!
//! Invariants: it never panics; a message it accepts re-encodes (`encode`,
//! within the 4096-byte bound) to a message that decodes to the same value,
//! and that encoding is a fixed point (encode ∘ decode of it is the identity).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The kubelet hands the operator a string; bytes that are not UTF-8 reach
    // it replaced, as `from_utf8_lossy` does.
    let text = String::from_utf8_lossy(data);
    let Ok(value) = hermes_results::decode(&text) else {
        return;
    };
    let again = match hermes_results::encode(&value) {
        Ok(t) => t,
        Err(e) => panic!("a decoded result does not re-encode: {e}: {value:?}"),
    };
    let back = match hermes_results::decode(&again) {
        Ok(back) => back,
        Err(e) => panic!("a re-encoded result does not decode: {e}: {again}"),
    };
    assert_eq!(back, value, "re-encoded result decodes to another value");
    let third = hermes_results::encode(&back).unwrap_or_default();
    assert_eq!(
        third, again,
        "the encoding of a decoded result is not a fixed point"
    );
});
