//! The gateway's ClientHello reader (`gateway/src/sni.rs`) on arbitrary
//! first bytes of a CONNECT tunnel: a task pod (the agent) writes them.
//!
//! Invariants: nothing panics; once a prefix of the bytes is judged (not
//! `Incomplete`), more bytes never change the judgement, so reading in
//! pieces cannot be played against the check; a judged server name is
//! ASCII and non-empty.

#![no_main]

#[path = "../../../gateway/src/sni.rs"]
#[allow(dead_code)]
mod sni;

use libfuzzer_sys::fuzz_target;
use sni::{Sniff, sniff};

fuzz_target!(|data: &[u8]| {
    let whole = sniff(data);
    if let Sniff::ClientHello { sni: Some(name) } = &whole {
        assert!(!name.is_empty() && name.is_ascii());
    }
    // A handful of prefixes, spread over the input.
    let n = data.len();
    for cut in [1, 2, 5, 6, 9, n / 4, n / 3, n / 2, n.saturating_sub(1)] {
        if cut > n {
            continue;
        }
        let early = sniff(&data[..cut]);
        if early != Sniff::Incomplete {
            assert_eq!(early, whole, "judged at {cut} bytes");
        }
    }
    // The same bytes behind a handshake record header.
    let mut framed = vec![0x16, 0x03, 0x01];
    framed.extend_from_slice(&(data.len().min(0xffff) as u16).to_be_bytes());
    framed.extend_from_slice(data);
    let _ = sniff(&framed);
});
