//! Counting the tokens a model response reports while it streams through:
//! an incremental server-sent-events parser for streamed Messages replies,
//! and a bounded copy of a plain JSON reply.
//!
//! ```text
//!   event: message_start     message.usage {input, cache_creation, cache_read, output}
//!   data: {...}              message.model
//!                            ...content blocks (ignored)...
//!   event: message_delta     usage {output, ...}: cumulative for the message,
//!   data: {...}              the latest value of each field wins
//! ```
//!
//! Chunks may split lines anywhere; lines end in `\n`, `\r\n` or `\r`;
//! `data:` may span several lines; comments (`:`) are skipped; the event is
//! told by the JSON `type` (the `event:` line is only a fallback). What does
//! not parse is skipped: the count is of what did, the response is never
//! failed for it. Self-contained (serde_json only), so the fuzz workspace
//! compiles this file on its own.

use serde_json::Value;

/// Longest SSE line or event data kept (longer ones are skipped).
pub const MAX_EVENT: usize = 1 << 20;
/// Largest JSON reply body copied for counting.
pub const MAX_JSON: usize = 4 << 20;

/// Token counts of one model reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input tokens, cache excluded.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation: u64,
}

impl Tokens {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.input
            .saturating_add(self.output)
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_creation)
    }
}

/// What a reply reported: its usage and the model that answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The usage (fields never reported count 0).
    pub tokens: Tokens,
    /// The model the reply names, if it names one.
    pub model: Option<String>,
}

/// The latest value of each usage field seen.
#[derive(Clone, Copy, Debug, Default)]
struct Latest {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
}

impl Latest {
    fn update(&mut self, usage: &Value) {
        let field = |name: &str| usage.get(name).and_then(Value::as_u64);
        let set = |slot: &mut Option<u64>, v: Option<u64>| {
            if v.is_some() {
                *slot = v;
            }
        };
        set(&mut self.input, field("input_tokens"));
        set(&mut self.output, field("output_tokens"));
        set(&mut self.cache_read, field("cache_read_input_tokens"));
        set(
            &mut self.cache_creation,
            field("cache_creation_input_tokens"),
        );
    }

    fn tokens(&self) -> Tokens {
        Tokens {
            input: self.input.unwrap_or(0),
            output: self.output.unwrap_or(0),
            cache_read: self.cache_read.unwrap_or(0),
            cache_creation: self.cache_creation.unwrap_or(0),
        }
    }
}

/// The incremental SSE usage counter.
#[derive(Debug, Default)]
pub struct SseUsage {
    line: Vec<u8>,
    line_too_long: bool,
    after_cr: bool,
    event: String,
    data: Vec<u8>,
    data_lines: usize,
    data_too_long: bool,
    usage: Latest,
    model: Option<String>,
    events: u64,
}

impl SseUsage {
    /// A counter that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of the stream.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push_line_part(&chunk[..end]);
            self.end_line();
            let cr = chunk[end] == b'\r';
            chunk = &chunk[end + 1..];
            if cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        self.push_line_part(chunk);
    }

    fn push_line_part(&mut self, part: &[u8]) {
        if self.line_too_long {
            return;
        }
        if self.line.len() + part.len() > MAX_EVENT {
            self.line_too_long = true;
            self.line.clear();
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let too_long = std::mem::replace(&mut self.line_too_long, false);
        if too_long {
            // Whatever field it was, its value is lost: so is the event.
            self.data_too_long = true;
            return;
        }
        self.process_line(&line);
    }

    fn process_line(&mut self, line: &[u8]) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            b"data" => {
                if self.data.len() + value.len() + 1 > MAX_EVENT {
                    self.data_too_long = true;
                    return;
                }
                if self.data_lines > 0 {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.data_lines += 1;
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        let lines = std::mem::replace(&mut self.data_lines, 0);
        if std::mem::replace(&mut self.data_too_long, false) || lines == 0 {
            return;
        }
        let Ok(json) = serde_json::from_slice::<Value>(&data) else {
            return;
        };
        self.events += 1;
        let kind = json
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.as_str());
        match kind {
            "message_start" => {
                if let Some(message) = json.get("message") {
                    if let Some(usage) = message.get("usage") {
                        self.usage.update(usage);
                    }
                    if let Some(model) = message.get("model").and_then(Value::as_str) {
                        self.model = Some(model.to_owned());
                    }
                }
            }
            "message_delta" => {
                if let Some(usage) = json.get("usage") {
                    self.usage.update(usage);
                }
            }
            _ => {}
        }
    }

    /// The stream ended (or broke): an event left without its blank line
    /// still counts, since the upstream bills it all the same.
    pub fn finish(&mut self) -> Observed {
        if !self.line.is_empty() || self.line_too_long {
            self.end_line();
        }
        self.dispatch();
        self.observed()
    }

    /// What has been counted so far.
    pub fn observed(&self) -> Observed {
        Observed {
            tokens: self.usage.tokens(),
            model: self.model.clone(),
        }
    }

    /// Events whose data parsed as JSON.
    pub fn events(&self) -> u64 {
        self.events
    }
}

/// The usage of a plain JSON reply, from a bounded copy of its body.
#[derive(Debug, Default)]
pub struct JsonUsage {
    body: Vec<u8>,
    too_long: bool,
}

impl JsonUsage {
    /// A counter that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.too_long {
            return;
        }
        if self.body.len() + chunk.len() > MAX_JSON {
            self.too_long = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    /// Whether the body outgrew [`MAX_JSON`] (nothing is counted then).
    pub fn too_long(&self) -> bool {
        self.too_long
    }

    /// The body ended: its `usage` and `model`, as far as they parse.
    pub fn finish(&mut self) -> Observed {
        parse_json(&std::mem::take(&mut self.body))
    }
}

/// The `usage` and `model` of a Message JSON body.
pub fn parse_json(body: &[u8]) -> Observed {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Observed::default();
    };
    let mut latest = Latest::default();
    if let Some(usage) = json.get("usage") {
        latest.update(usage);
    }
    Observed {
        tokens: latest.tokens(),
        model: json.get("model").and_then(Value::as_str).map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A stream as the model API sends it (shape of a recorded reply).
    pub(crate) const RECORDED: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":1200,\"cache_creation_input_tokens\":3000,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n",
        "\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n",
        "\n",
        ": keep-alive comment\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n",
        "\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"usage: {\\\"output_tokens\\\": 999}\"}}\n",
        "\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n",
        "\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":40}}\n",
        "\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n",
        "\n",
    );

    fn expected() -> Observed {
        Observed {
            tokens: Tokens {
                input: 1200,
                output: 40,
                cache_read: 0,
                cache_creation: 3000,
            },
            model: Some("claude-sonnet-4-5".into()),
        }
    }

    fn count(chunks: &[&[u8]]) -> Observed {
        let mut c = SseUsage::new();
        for ch in chunks {
            c.feed(ch);
        }
        c.finish()
    }

    #[test]
    fn counts_a_recorded_stream() {
        assert_eq!(count(&[RECORDED.as_bytes()]), expected());
    }

    #[test]
    fn counts_byte_by_byte_and_with_crlf_and_cr_line_ends() {
        let bytes: Vec<&[u8]> = RECORDED.as_bytes().chunks(1).collect();
        assert_eq!(count(&bytes), expected());
        let crlf = RECORDED.replace('\n', "\r\n");
        let bytes: Vec<&[u8]> = crlf.as_bytes().chunks(1).collect();
        assert_eq!(count(&bytes), expected());
        let cr = RECORDED.replace('\n', "\r");
        let bytes: Vec<&[u8]> = cr.as_bytes().chunks(3).collect();
        assert_eq!(count(&bytes), expected());
    }

    #[test]
    fn an_empty_chunk_between_cr_and_lf_changes_nothing() {
        let cr = RECORDED.replace('\n', "\r\n");
        let mut pieces: Vec<&[u8]> = Vec::new();
        for line in cr.as_bytes().split_inclusive(|&b| b == b'\r') {
            pieces.push(line);
            pieces.push(b"");
        }
        assert_eq!(count(&pieces), expected());
    }

    #[test]
    fn the_json_type_decides_when_event_lines_are_missing() {
        let bare: String = RECORDED
            .lines()
            .filter(|l| !l.starts_with("event:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(count(&[bare.as_bytes()]), expected());
    }

    #[test]
    fn data_may_span_several_lines() {
        let s = concat!(
            "data: {\"type\":\"message_start\",\n",
            "data:  \"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":7}}}\n",
            "\n",
            "data:{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}\n\n",
        );
        let got = count(&[s.as_bytes()]);
        assert_eq!(got.tokens.input, 7);
        assert_eq!(got.tokens.output, 3);
        assert_eq!(got.model.as_deref(), Some("m"));
    }

    #[test]
    fn message_delta_fields_are_cumulative_and_the_latest_wins() {
        let s = concat!(
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n",
            "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\n",
            "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9,\"input_tokens\":12}}\n\n",
        );
        let got = count(&[s.as_bytes()]);
        assert_eq!(got.tokens.input, 12);
        assert_eq!(got.tokens.output, 9);
    }

    #[test]
    fn malformed_events_are_skipped_and_the_rest_counts() {
        let s = concat!(
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10}}}\n\n",
            "data: {not json\n\n",
            "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":-4}}\n\n",
            "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":\"many\"}}\n\n",
            "data: {\"type\":\"message_delta\",\"usage\":[1,2]}\n\n",
            "data: [1,2,3]\n\n",
            "\u{0}\u{ff}garbage without colon\n\n",
            "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":6}}\n\n",
        );
        let got = count(&[s.as_bytes()]);
        assert_eq!(got.tokens.input, 10);
        assert_eq!(got.tokens.output, 6);
    }

    #[test]
    fn a_stream_cut_before_its_blank_line_still_counts_its_last_event() {
        let s = "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10}}}";
        assert_eq!(count(&[s.as_bytes()]).tokens.input, 10);
        // Cut in the middle of the JSON: nothing counted, nothing fails.
        assert_eq!(count(&[&s.as_bytes()[..30]]).tokens, Tokens::default());
    }

    #[test]
    fn overlong_lines_are_skipped_without_losing_the_next_events() {
        let mut c = SseUsage::new();
        c.feed(b"data: ");
        let junk = vec![b'x'; 64 * 1024];
        for _ in 0..20 {
            c.feed(&junk);
        }
        c.feed(b"\n\n");
        c.feed(b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":2}}\n\n");
        assert_eq!(c.finish().tokens.output, 2);
    }

    #[test]
    fn counts_a_json_reply() {
        let body = br#"{"id":"msg_1","type":"message","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":200,"output_tokens":50,"cache_read_input_tokens":7,"cache_creation_input_tokens":3}}"#;
        let mut j = JsonUsage::new();
        for ch in body.chunks(5) {
            j.feed(ch);
        }
        assert_eq!(
            j.finish(),
            Observed {
                tokens: Tokens {
                    input: 200,
                    output: 50,
                    cache_read: 7,
                    cache_creation: 3
                },
                model: Some("claude-sonnet-4-5".into()),
            }
        );
        assert_eq!(parse_json(b"{\"usage\":"), Observed::default());
        assert_eq!(parse_json(b"[]"), Observed::default());
    }

    #[test]
    fn a_json_reply_over_the_limit_is_not_buffered() {
        let mut j = JsonUsage::new();
        j.feed(&vec![b' '; MAX_JSON]);
        j.feed(b"{}");
        assert!(j.too_long());
        assert_eq!(j.finish(), Observed::default());
    }

    fn splits(len: usize) -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(0..=len, 0..40).prop_map(|mut v| {
            v.sort_unstable();
            v
        })
    }

    fn split_at<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        for &c in cuts {
            out.push(&bytes[at..c]);
            at = c;
        }
        out.push(&bytes[at..]);
        out
    }

    proptest! {
        #[test]
        fn any_split_of_a_recorded_stream_gives_the_same_figures(
            cuts in splits(RECORDED.len()),
            ending in 0usize..3,
        ) {
            let text = match ending {
                0 => RECORDED.to_owned(),
                1 => RECORDED.replace('\n', "\r\n"),
                _ => RECORDED.replace('\n', "\r"),
            };
            let cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            prop_assert_eq!(count(&split_at(text.as_bytes(), &cuts)), expected());
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in splits(2000),
        ) {
            let cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            let _ = count(&split_at(&bytes, &cuts));
        }
    }
}
