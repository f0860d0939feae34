//! The agent CLI's own report (Claude Code `--output-format json`), parsed
//! leniently: it is advisory, and anything missing is zero.

use std::path::Path;

use hermes_results::AgentReport;
use serde_json::Value;

/// Largest agent output file read.
const MAX_BYTES: u64 = 16 << 20;

/// Reads a bounded file as text; `None` when absent, too large or unreadable.
pub fn read_bounded(path: &Path, max: u64) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > max {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The result object of the CLI's output: the whole text as JSON, or the
/// last line that parses as an object with `"type": "result"` (stream output).
pub fn result_object(text: &str) -> Option<Value> {
    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(text.trim()) {
        return Some(v);
    }
    text.lines()
        .rev()
        .find_map(|l| match serde_json::from_str::<Value>(l.trim()) {
            Ok(v @ Value::Object(_)) if v.get("type").and_then(Value::as_str) == Some("result") => {
                Some(v)
            }
            _ => None,
        })
}

/// Formats a cost as a plain decimal string (no exponent, no sign).
pub fn cost_string(cost: f64) -> Option<String> {
    if !cost.is_finite() || !(0.0..=1e9).contains(&cost) {
        return None;
    }
    let s = format!("{cost:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    Some(if s.is_empty() {
        "0".to_owned()
    } else {
        s.to_owned()
    })
}

/// Sums one counter over every model of `modelUsage` (camelCase keys).
fn model_usage_sum(v: &Value, key: &str) -> u64 {
    v.get("modelUsage")
        .and_then(Value::as_object)
        .map(|models| {
            models
                .values()
                .filter_map(|m| m.get(key).and_then(Value::as_u64))
                .fold(0u64, u64::saturating_add)
        })
        .unwrap_or(0)
}

/// Builds the report from a parsed result object. Token counts come from
/// `modelUsage` (summed over models) when it has them: after a broken stream
/// the CLI retries without streaming and its top-level `usage` reads 0,
/// while `modelUsage` and the cost stay exact.
pub fn report_from(v: &Value, exit_code: i32) -> AgentReport {
    let per_model = v
        .get("modelUsage")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty());
    let u = |k: &str, model_key: &str| {
        if per_model {
            return model_usage_sum(v, model_key);
        }
        v.get("usage")
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    AgentReport {
        exit_code,
        is_error: v.get("is_error").and_then(Value::as_bool).unwrap_or(false),
        turns: v.get("num_turns").and_then(Value::as_u64).unwrap_or(0),
        input_tokens: u("input_tokens", "inputTokens"),
        output_tokens: u("output_tokens", "outputTokens"),
        cache_read_tokens: u("cache_read_input_tokens", "cacheReadInputTokens"),
        cache_creation_tokens: u("cache_creation_input_tokens", "cacheCreationInputTokens"),
        cost_usd: v
            .get("total_cost_usd")
            .and_then(Value::as_f64)
            .and_then(cost_string),
        version: v
            .get("version")
            .and_then(Value::as_str)
            .filter(|s| s.len() <= 128 && !s.chars().any(char::is_control))
            .map(str::to_owned),
        ignored: None,
    }
}

/// Reads the agent's report from `path`; `None` when missing or invalid.
pub fn read_report(path: &Path, exit_code: i32) -> Option<AgentReport> {
    let text = read_bounded(path, MAX_BYTES)?;
    let v = result_object(&text)?;
    Some(report_from(&v, exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_claude_code_result_object() {
        let v = result_object(
            r#"{"type":"result","subtype":"success","is_error":false,"num_turns":7,"result":"done",
               "total_cost_usd":0.1234567,"usage":{"input_tokens":10,"output_tokens":20,
               "cache_read_input_tokens":30,"cache_creation_input_tokens":40}}"#,
        )
        .unwrap();
        let r = report_from(&v, 0);
        assert_eq!(r.turns, 7);
        assert_eq!(r.input_tokens, 10);
        assert_eq!(r.cache_creation_tokens, 40);
        assert_eq!(r.cost_usd.as_deref(), Some("0.123457"));
    }

    #[test]
    fn tokens_come_from_model_usage_when_the_top_level_usage_was_lost() {
        let v = result_object(
            r#"{"type":"result","is_error":false,"num_turns":4,"total_cost_usd":0.02289,
               "usage":{"input_tokens":0,"output_tokens":0},
               "modelUsage":{"claude-sonnet-4-5":{"inputTokens":1670,"outputTokens":900,
                 "cacheReadInputTokens":13100,"cacheCreationInputTokens":0,"costUSD":0.02},
                 "claude-haiku":{"inputTokens":30,"outputTokens":10}}}"#,
        )
        .unwrap();
        let r = report_from(&v, 0);
        assert_eq!(
            (r.input_tokens, r.output_tokens, r.cache_read_tokens),
            (1700, 910, 13100)
        );
        assert_eq!(r.cost_usd.as_deref(), Some("0.02289"));
    }

    #[test]
    fn cost_strings_are_plain_decimals() {
        assert_eq!(cost_string(1e-9).as_deref(), Some("0"));
        assert_eq!(cost_string(2.5).as_deref(), Some("2.5"));
        assert_eq!(cost_string(-1.0), None);
        assert_eq!(cost_string(f64::NAN), None);
    }
}
