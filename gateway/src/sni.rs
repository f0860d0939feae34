//! The server name a TLS client asks for, from the first bytes it sends
//! through a CONNECT tunnel: enough of TLS's record and handshake framing to
//! find the ClientHello's `server_name` extension, nothing more.
//!
//! The ClientHello may arrive in pieces (a read returns part of a record) or
//! span several records (a record carries at most 16 KiB, and a client may
//! fragment the handshake at will); [`sniff`] is called again with the bytes
//! so far until it stops answering [`Sniff::Incomplete`].
//!
//! Self-contained (no crate imports), so the fuzz workspace compiles this
//! file on its own.

/// Most bytes a ClientHello may take, records included; longer is refused.
pub const MAX_HELLO: usize = 64 * 1024;

const RECORD_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: u16 = 0x0000;
const NAME_TYPE_HOST: u8 = 0x00;
/// Longest record payload TLS allows (2^14), plus the slack TLS 1.2 allows
/// for compressed and encrypted records (2^14 + 2048).
const MAX_RECORD: usize = 16384 + 2048;

/// What the first bytes of a tunnel are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sniff {
    /// Not a TLS handshake (ssh, plain text, ...).
    NotTls,
    /// A TLS handshake record that has not arrived in full yet.
    Incomplete,
    /// A complete ClientHello, with the host name it asks for, if any.
    ClientHello {
        /// The `server_name` host name, as sent.
        sni: Option<String>,
    },
    /// A TLS handshake that breaks the framing rules, or a ClientHello whose
    /// server name cannot be judged (duplicates, not ASCII).
    Malformed,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// Judges the bytes a client sent so far.
pub fn sniff(buf: &[u8]) -> Sniff {
    match buf.first() {
        None => return Sniff::Incomplete,
        Some(&RECORD_HANDSHAKE) => {}
        Some(_) => return Sniff::NotTls,
    }
    // Record version: major 3 (SSL 3.0 .. TLS 1.3 all say 3.x).
    if buf.len() >= 2 && buf[1] != 0x03 {
        return Sniff::NotTls;
    }
    // Gather the handshake bytes from consecutive handshake records.
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            return if handshake_complete(&handshake) {
                finish(&handshake)
            } else {
                Sniff::Incomplete
            };
        }
        if rest[0] != RECORD_HANDSHAKE || rest[1] != 0x03 {
            // Another record type before the ClientHello was whole.
            return if handshake_complete(&handshake) {
                finish(&handshake)
            } else {
                Sniff::Malformed
            };
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > MAX_RECORD {
            return Sniff::Malformed;
        }
        let Some(payload) = rest.get(5..5 + len) else {
            return if handshake_complete(&handshake) {
                finish(&handshake)
            } else {
                Sniff::Incomplete
            };
        };
        handshake.extend_from_slice(payload);
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            if handshake[0] != HANDSHAKE_CLIENT_HELLO {
                return Sniff::Malformed;
            }
            let body = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if body + 4 > MAX_HELLO {
                return Sniff::Malformed;
            }
            if handshake.len() >= body + 4 {
                return finish(&handshake);
            }
        }
    }
}

fn handshake_complete(handshake: &[u8]) -> bool {
    let mut r = Reader { buf: handshake };
    match (r.u8(), r.u24()) {
        (Some(_), Some(n)) => r.buf.len() >= n,
        _ => false,
    }
}

fn finish(handshake: &[u8]) -> Sniff {
    parse_hello(handshake).unwrap_or(Sniff::Malformed)
}

fn parse_hello(handshake: &[u8]) -> Option<Sniff> {
    let mut r = Reader { buf: handshake };
    if r.u8()? != HANDSHAKE_CLIENT_HELLO {
        return None;
    }
    let len = r.u24()?;
    let mut r = Reader { buf: r.take(len)? };
    let _legacy_version = r.u16()?;
    let _random = r.take(32)?;
    let session = r.vec8()?;
    if session.len() > 32 {
        return None;
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    let compression = r.vec8()?;
    if compression.is_empty() {
        return None;
    }
    if r.buf.is_empty() {
        // No extensions at all (an old client): no server name.
        return Some(Sniff::ClientHello { sni: None });
    }
    let mut exts = Reader { buf: r.vec16()? };
    if !r.buf.is_empty() {
        return None;
    }
    let mut sni = None;
    while !exts.buf.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != EXT_SERVER_NAME {
            continue;
        }
        if sni.is_some() {
            // Two server_name extensions: which one the server reads is
            // its business; refuse to guess.
            return None;
        }
        sni = Some(parse_server_name(data)?);
    }
    Some(Sniff::ClientHello { sni })
}

fn parse_server_name(data: &[u8]) -> Option<String> {
    let mut r = Reader { buf: data };
    let mut list = Reader { buf: r.vec16()? };
    if !r.buf.is_empty() {
        return None;
    }
    let mut host = None;
    while !list.buf.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind != NAME_TYPE_HOST {
            continue;
        }
        if host.is_some() || name.is_empty() || !name.is_ascii() {
            return None;
        }
        host = Some(String::from_utf8(name.to_vec()).ok()?);
    }
    host
}

/// A ClientHello for tests and the fuzz seeds: `sni` as its one server name
/// (or none), split into records of at most `record` payload bytes.
pub fn client_hello(sni: Option<&str>, record: usize) -> Vec<u8> {
    let mut exts = Vec::new();
    // A supported_versions extension first, so the SNI is not at a fixed place.
    exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    if let Some(name) = sni {
        let n = name.len() as u16;
        let mut list = vec![NAME_TYPE_HOST];
        list.extend_from_slice(&n.to_be_bytes());
        list.extend_from_slice(name.as_bytes());
        let mut ext = Vec::new();
        ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
        ext.extend_from_slice(&list);
        exts.extend_from_slice(&EXT_SERVER_NAME.to_be_bytes());
        exts.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        exts.extend_from_slice(&ext);
    }
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x11; 32]);
    body.push(32);
    body.extend_from_slice(&[0x22; 32]);
    body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![HANDSHAKE_CLIENT_HELLO];
    let n = body.len();
    hs.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    hs.extend_from_slice(&body);
    let mut out = Vec::new();
    for chunk in hs.chunks(record.max(1)) {
        out.extend_from_slice(&[RECORD_HANDSHAKE, 0x03, 0x01]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello(sni: &str) -> Sniff {
        Sniff::ClientHello {
            sni: Some(sni.to_owned()),
        }
    }

    #[test]
    fn finds_the_server_name_of_a_client_hello() {
        let bytes = client_hello(Some("registry.npmjs.org"), 16384);
        assert_eq!(sniff(&bytes), hello("registry.npmjs.org"));
        // Application data after the hello does not matter.
        let mut more = bytes.clone();
        more.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0xff]);
        assert_eq!(sniff(&more), hello("registry.npmjs.org"));
    }

    #[test]
    fn a_hello_without_server_name_has_none() {
        assert_eq!(
            sniff(&client_hello(None, 16384)),
            Sniff::ClientHello { sni: None }
        );
    }

    #[test]
    fn a_hello_split_across_reads_is_incomplete_until_whole() {
        let bytes = client_hello(Some("github.com"), 16384);
        for cut in 0..bytes.len() {
            assert_eq!(sniff(&bytes[..cut]), Sniff::Incomplete, "cut at {cut}");
        }
        assert_eq!(sniff(&bytes), hello("github.com"));
    }

    #[test]
    fn a_hello_fragmented_over_records_is_reassembled() {
        for size in [1, 7, 40, 100] {
            let bytes = client_hello(Some("files.pythonhosted.org"), size);
            assert_eq!(sniff(&bytes), hello("files.pythonhosted.org"), "{size}");
            for cut in 0..bytes.len() {
                assert_eq!(sniff(&bytes[..cut]), Sniff::Incomplete, "{size} {cut}");
            }
        }
    }

    #[test]
    fn what_is_not_a_handshake_is_not_tls() {
        for bytes in [
            &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
            b"GET / HTTP/1.1\r\n",
            &[0x17, 0x03, 0x03, 0x00, 0x10][..],
            &[0x16, 0x02, 0x00][..],
        ] {
            assert_eq!(sniff(bytes), Sniff::NotTls, "{bytes:?}");
        }
    }

    #[test]
    fn broken_handshakes_are_malformed() {
        // A handshake that is not a ClientHello (a ServerHello).
        let mut server = client_hello(Some("a.com"), 16384);
        server[5] = 0x02;
        assert_eq!(sniff(&server), Sniff::Malformed);
        // An empty record, an oversized record.
        assert_eq!(sniff(&[0x16, 0x03, 0x01, 0x00, 0x00]), Sniff::Malformed);
        assert_eq!(sniff(&[0x16, 0x03, 0x01, 0xff, 0xff]), Sniff::Malformed);
        // Another record type in the middle of the hello.
        let frag = client_hello(Some("a.com"), 10);
        let mut mixed = frag[..15].to_vec();
        mixed.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00]);
        assert_eq!(sniff(&mixed), Sniff::Malformed);
        // Lengths inside the hello that run past its end.
        let mut bad = client_hello(Some("a.com"), 16384);
        let last = bad.len() - 1;
        bad[last - 6] = 0xff;
        assert_eq!(sniff(&bad), Sniff::Malformed);
        // A hello that claims to be larger than the limit.
        assert_eq!(
            sniff(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x00]),
            Sniff::Malformed
        );
    }

    #[test]
    fn two_server_names_are_malformed() {
        let one = client_hello(Some("a.com"), 16384);
        // Append a second server_name extension by rebuilding the extensions.
        let ext: Vec<u8> = {
            let name = b"b.com";
            let mut list = vec![0u8];
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name);
            let mut e = vec![0, 0];
            e.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
            e.extend_from_slice(&(list.len() as u16).to_be_bytes());
            e.extend_from_slice(&list);
            e
        };
        let mut hs = one[5..].to_vec();
        hs.extend_from_slice(&ext);
        // Fix the handshake, extensions and record lengths.
        let body = hs.len() - 4;
        hs[1..4].copy_from_slice(&[(body >> 16) as u8, (body >> 8) as u8, body as u8]);
        let ext_at = 4 + 2 + 32 + 1 + 32 + 2 + 4 + 2;
        let exts = hs.len() - ext_at - 2;
        hs[ext_at..ext_at + 2].copy_from_slice(&(exts as u16).to_be_bytes());
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        assert_eq!(sniff(&rec), Sniff::Malformed);
    }

    proptest! {
        #[test]
        fn any_split_into_records_gives_the_same_name(
            size in 1usize..300,
            name in "[a-z]{1,20}(\\.[a-z]{1,10}){0,3}",
        ) {
            let bytes = client_hello(Some(&name), size);
            prop_assert_eq!(sniff(&bytes), Sniff::ClientHello { sni: Some(name) });
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = sniff(&bytes);
            let mut tls = vec![0x16, 0x03, 0x01];
            tls.extend_from_slice(&bytes);
            let _ = sniff(&tls);
        }
    }
}
