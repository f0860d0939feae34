//! The Messages API as the agent CLI uses it: what is read from a request,
//! and the replies (a Message, its SSE stream, errors).

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::scenario::{Block, Turn, Usage};

static IDS: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    IDS.fetch_add(1, Ordering::Relaxed)
}

/// What the server reads from a `POST /v1/messages` body. Nothing is
/// validated: fields that are missing or odd are simply absent here.
#[derive(Debug, Clone, Default)]
pub struct Inspected {
    /// The requested model.
    pub model: String,
    /// Whether the client asked for an SSE stream.
    pub stream: bool,
    /// How many assistant turns the history holds (consecutive assistant
    /// messages count once): the index of the turn to answer with.
    pub assistant_turns: usize,
    /// How many tools the request offers.
    pub tools: usize,
    /// The system prompt as text (blocks joined).
    pub system: String,
    /// The working directory the CLI states in its environment section.
    pub cwd: Option<String>,
    /// The text of the tool results in the last message.
    pub tool_results: Vec<String>,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|b| match b {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("text")
                    .map(text_of)
                    .or_else(|| o.get("content").map(text_of))
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Object(o) => o.get("text").map(text_of).unwrap_or_default(),
        _ => String::new(),
    }
}

/// The directory after `Primary working directory: ` (2.1.x) or
/// `Working directory: ` (older versions).
fn find_cwd(text: &str) -> Option<String> {
    const MARK: &str = "orking directory: ";
    let at = text.find(MARK)?;
    let rest = &text[at + MARK.len()..];
    let line = rest.lines().next()?.trim();
    (line.starts_with('/')).then(|| line.to_owned())
}

/// Reads what the server needs from a request body.
pub fn inspect(body: &Value) -> Inspected {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut assistant_turns = 0;
    let mut prev_assistant = false;
    for m in &messages {
        let is_assistant = m.get("role").and_then(Value::as_str) == Some("assistant");
        if is_assistant && !prev_assistant {
            assistant_turns += 1;
        }
        prev_assistant = is_assistant;
    }
    let system = body.get("system").map(text_of).unwrap_or_default();
    let mut cwd = find_cwd(&system);
    if cwd.is_none() {
        // Some versions state the environment in a message instead.
        cwd = messages
            .iter()
            .find_map(|m| m.get("content").map(text_of).and_then(|t| find_cwd(&t)));
    }
    let tool_results = messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                .map(|b| b.get("content").map(text_of).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    Inspected {
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("claude-scripted")
            .to_owned(),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        assistant_turns,
        tools: body
            .get("tools")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
        system,
        cwd,
        tool_results,
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
    })
}

fn blocks_with_ids(turn: &Turn) -> Vec<Value> {
    let n = next_id();
    turn.content
        .iter()
        .enumerate()
        .map(|(i, b)| match b {
            Block::Text { text } => json!({"type": "text", "text": text}),
            Block::ToolUse { name, input } => json!({
                "type": "tool_use",
                "id": format!("toolu_hms{n:06}x{i:02}"),
                "name": name,
                "input": input,
            }),
        })
        .collect()
}

/// The whole assistant message (the non-streaming reply).
pub fn message(model: &str, turn: &Turn) -> Value {
    json!({
        "id": format!("msg_hms{:010}", next_id()),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks_with_ids(turn),
        "stop_reason": turn.stop_reason(),
        "stop_sequence": null,
        "usage": usage_json(&turn.usage),
    })
}

/// Splits `s` into pieces of about `n` bytes on character boundaries, so a
/// stream carries several deltas per block as the real API's does.
fn pieces(s: &str, n: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < s.len() {
        let mut end = (start + n).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        out.push(&s[start..end]);
        start = end;
    }
    out
}

/// The SSE events (name, data) of the streamed reply: `message_start` (with
/// the input-side usage and no output yet), per block
/// `content_block_start/delta.../stop`, then `message_delta` (stop reason
/// and the full usage) and `message_stop`.
pub fn stream_events(model: &str, turn: &Turn) -> Vec<(&'static str, Value)> {
    let msg = message(model, turn);
    let mut start_usage = turn.usage;
    start_usage.output_tokens = 0;
    let mut events = vec![(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": msg["id"],
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage_json(&start_usage),
        }}),
    )];
    let blocks = msg["content"].as_array().cloned().unwrap_or_default();
    for (index, block) in blocks.iter().enumerate() {
        let kind = block["type"].as_str().unwrap_or("text");
        if kind == "tool_use" {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": {
                    "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}
                }}),
            ));
            let input = block["input"].to_string();
            for p in pieces(&input, 64) {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": p}}),
                ));
            }
        } else {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": index,
                       "content_block": {"type": "text", "text": ""}}),
            ));
            for p in pieces(block["text"].as_str().unwrap_or(""), 64) {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": p}}),
                ));
            }
        }
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push((
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": turn.stop_reason(), "stop_sequence": null},
               "usage": usage_json(&turn.usage)}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    events
}

/// One SSE event on the wire.
pub fn sse(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// An error body: `{"type":"error","error":{"type":..,"message":..}}`.
pub fn error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn counts_assistant_runs_and_reads_cwd_and_tool_results() {
        let body = json!({
            "model": "m", "stream": true,
            "system": [{"type": "text", "text": "x\n - Primary working directory: /tmp/w\n - Is a git repository: true"}],
            "tools": [{"name": "Bash"}],
            "messages": [
                {"role": "user", "content": "do it"},
                {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {}}]},
                {"role": "system", "content": "odd"},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                    "content": [{"type": "text", "text": "ok 1"}]}]}
            ]
        });
        let i = inspect(&body);
        assert_eq!(i.assistant_turns, 1);
        assert_eq!(i.cwd.as_deref(), Some("/tmp/w"));
        assert_eq!(i.tool_results, vec!["ok 1".to_owned()]);
        assert_eq!((i.tools, i.stream), (1, true));
    }

    #[test]
    fn stream_reassembles_to_the_message() {
        let turn = Turn {
            content: vec![
                Block::Text {
                    text: "é".repeat(100),
                },
                Block::ToolUse {
                    name: "Bash".into(),
                    input: json!({"command": "x".repeat(200)}),
                },
            ],
            stop_reason: None,
            usage: Usage {
                input_tokens: 10,
                output_tokens: 7,
                ..Usage::default()
            },
        };
        let ev = stream_events("m", &turn);
        let (mut text, mut json_in) = (String::new(), String::new());
        for (name, data) in &ev {
            if *name == "content_block_delta" {
                if let Some(t) = data["delta"]["text"].as_str() {
                    text.push_str(t);
                }
                if let Some(t) = data["delta"]["partial_json"].as_str() {
                    json_in.push_str(t);
                }
            }
        }
        assert_eq!(text, "é".repeat(100));
        let input: Value = serde_json::from_str(&json_in).unwrap();
        assert_eq!(input["command"].as_str().unwrap().len(), 200);
        let delta = &ev[ev.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta["usage"]["output_tokens"], 7);
        assert_eq!(ev[0].1["message"]["usage"]["output_tokens"], 0);
    }
}
