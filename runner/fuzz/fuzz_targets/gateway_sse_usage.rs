//! The gateway's usage counter (`gateway/src/usage.rs`) on arbitrary model
//! replies: an upstream (or anything that answers in its place) writes them.
//!
//! Invariants: nothing panics; the figures do not depend on where the
//! stream is cut into chunks (the first two bytes choose the cuts); the
//! JSON counter takes any body.

#![no_main]

#[path = "../../../gateway/src/usage.rs"]
#[allow(dead_code)]
mod usage;

use libfuzzer_sys::fuzz_target;
use usage::{JsonUsage, SseUsage, parse_json};

fn count(chunks: &[&[u8]]) -> usage::Observed {
    let mut c = SseUsage::new();
    for ch in chunks {
        c.feed(ch);
    }
    c.finish()
}

fuzz_target!(|data: &[u8]| {
    let (seed, body) = match data {
        [a, b, rest @ ..] => ((usize::from(*a) << 8 | usize::from(*b)) + 1, rest),
        _ => (1, data),
    };
    let whole = count(&[body]);
    // Cuts every `seed % 97 + 1` bytes, and byte by byte.
    let step = seed % 97 + 1;
    let pieces: Vec<&[u8]> = body.chunks(step).collect();
    assert_eq!(count(&pieces), whole, "chunks of {step}");
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(count(&bytes), whole, "byte by byte");
    // One cut at a position the seed picks.
    if !body.is_empty() {
        let at = seed % body.len();
        assert_eq!(count(&[&body[..at], &body[at..]]), whole, "cut at {at}");
    }

    let mut j = JsonUsage::new();
    for ch in body.chunks(step) {
        j.feed(ch);
    }
    assert_eq!(j.finish(), parse_json(body));
});
