//! This instance's counters, per (task uid, phase): what it forwarded and
//! counted, priced exactly, and the budget judgement made from them.
//!
//! Prices are decimal dollars per million tokens, so a token at a price of
//! `p` micro-dollars per million costs exactly `p` picodollars: cost is
//! `tokens × Usd::micros()`, in integers, never floats.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hermes_crds::RunPhase;
use hermes_crds::gateway::{Claims, Figures, Limits, UsageEntry, UsageReport};
use hermes_crds::profile::{ModelPrice, ModelSpec};

use crate::usage::Tokens;

/// How long a counter of an ended (or deleted) task is kept after its last use.
pub const IDLE_EVICTION: Duration = Duration::from_secs(600);

/// The figures of one reply: its tokens, priced by `price` (or counted as
/// unpriced when the table has no row for its model, or a row fails to parse).
pub fn price(tokens: &Tokens, price: Option<&ModelPrice>) -> Figures {
    let mut f = Figures {
        turns: 0,
        input_tokens: tokens.input,
        output_tokens: tokens.output,
        cache_read_tokens: tokens.cache_read,
        cache_creation_tokens: tokens.cache_creation,
        cost_pico_usd: 0,
        unpriced_tokens: 0,
    };
    let rates = price.and_then(|p| {
        Some([
            p.input.micros("input").ok()?,
            p.output.micros("output").ok()?,
            p.cache_read.micros("cacheRead").ok()?,
            p.cache_write.micros("cacheWrite").ok()?,
        ])
    });
    match rates {
        Some([input, output, read, write]) => {
            f.cost_pico_usd = tokens
                .input
                .saturating_mul(input)
                .saturating_add(tokens.output.saturating_mul(output))
                .saturating_add(tokens.cache_read.saturating_mul(read))
                .saturating_add(tokens.cache_creation.saturating_mul(write));
        }
        None => f.unpriced_tokens = tokens.total(),
    }
    f
}

/// Why a turn is not forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BudgetRefusal {
    /// A limit is reached; the message says which and how far.
    Spent(String),
    /// The claims limit cost and the request's model has no price.
    Unpriceable(String),
}

impl BudgetRefusal {
    /// The message the client gets.
    pub fn message(&self) -> String {
        match self {
            BudgetRefusal::Spent(d) => format!(
                "Hermes gateway: the task's budget is spent ({d}); no further model requests are forwarded"
            ),
            BudgetRefusal::Unpriceable(m) => format!(
                "Hermes gateway: the model {m:?} has no price in the profile's table, so the task's cost budget cannot be enforced; no request for it is forwarded"
            ),
        }
    }
}

/// Whether a turn for `model` may go on, with `used` counted so far.
pub fn judge(
    limits: &Limits,
    used: &Figures,
    model: Option<&str>,
    spec: &ModelSpec,
) -> Result<(), BudgetRefusal> {
    if let Some(spent) = limits.reached(used) {
        return Err(BudgetRefusal::Spent(limits.describe(spent, used)));
    }
    if limits.cost_micros.is_some() {
        let name = model.unwrap_or_default();
        if model.and_then(|m| spec.price(m)).is_none() {
            return Err(BudgetRefusal::Unpriceable(name.to_owned()));
        }
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    uid: String,
    phase: RunPhase,
}

#[derive(Clone, Debug)]
struct Entry {
    namespace: String,
    task: String,
    figures: Figures,
    refused_for_budget: u64,
    last_used: Instant,
}

/// The counters of this gateway instance.
#[derive(Debug, Default)]
pub struct Meters {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Meters {
    fn with<R>(&self, claims: &Claims, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map
            .entry(Key {
                uid: claims.uid.clone(),
                phase: claims.phase,
            })
            .or_insert_with(|| Entry {
                namespace: claims.namespace.clone(),
                task: claims.task.clone(),
                figures: Figures::default(),
                refused_for_budget: 0,
                last_used: Instant::now(),
            });
        entry.last_used = Instant::now();
        f(entry)
    }

    /// What this instance counted for the claims' task and phase.
    pub fn live(&self, claims: &Claims) -> Figures {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&Key {
            uid: claims.uid.clone(),
            phase: claims.phase,
        })
        .map(|e| e.figures)
        .unwrap_or_default()
    }

    /// A turn was forwarded.
    pub fn add_turn(&self, claims: &Claims) {
        self.with(claims, |e| {
            e.figures.turns = e.figures.turns.saturating_add(1)
        });
    }

    /// A reply's usage was counted.
    pub fn add(&self, claims: &Claims, figures: &Figures) {
        self.with(claims, |e| e.figures = e.figures.plus(figures));
    }

    /// A turn was refused for the budget.
    pub fn add_refusal(&self, claims: &Claims) {
        self.with(claims, |e| {
            e.refused_for_budget = e.refused_for_budget.saturating_add(1)
        });
    }

    /// The report of `/v1/usage`, for every task or only `uid`'s.
    pub fn report(&self, instance: &str, uid: Option<&str>) -> UsageReport {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries: Vec<UsageEntry> = map
            .iter()
            .filter(|(k, _)| uid.is_none_or(|u| u == k.uid))
            .map(|(k, e)| UsageEntry {
                namespace: e.namespace.clone(),
                task: e.task.clone(),
                uid: k.uid.clone(),
                phase: k.phase,
                figures: e.figures,
                refused_for_budget: e.refused_for_budget,
            })
            .collect();
        entries.sort_by(|a, b| {
            (&a.namespace, &a.task, a.phase).cmp(&(&b.namespace, &b.task, b.phase))
        });
        UsageReport {
            instance: instance.to_owned(),
            entries,
        }
    }

    /// Drops the counters idle for [`IDLE_EVICTION`] whose task `live` says
    /// is gone or ended (`live(namespace, task, uid)`); returns how many.
    pub fn evict(&self, now: Instant, live: impl Fn(&str, &str, &str) -> bool) -> usize {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        map.retain(|k, e| {
            now.saturating_duration_since(e.last_used) < IDLE_EVICTION
                || live(&e.namespace, &e.task, &k.uid)
        });
        before - map.len()
    }

    /// How many counters are held.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_crds::gateway::PICO_PER_MICRO;
    use hermes_crds::validation::Usd;

    fn row(model: &str, input: &str, output: &str, read: &str, write: &str) -> ModelPrice {
        ModelPrice {
            model: model.into(),
            input: Usd(input.into()),
            output: Usd(output.into()),
            cache_read: Usd(read.into()),
            cache_write: Usd(write.into()),
        }
    }

    fn sonnet() -> ModelPrice {
        row("claude-sonnet-4-5*", "3", "15", "0.3", "3.75")
    }

    fn spec() -> ModelSpec {
        serde_json::from_value(serde_json::json!({
            "agent": {"url": "http://up", "credential": "real"},
            "prices": [{"model": "claude-sonnet-4-5*", "input": "3", "output": "15", "cacheRead": "0.3", "cacheWrite": "3.75"}],
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn claims(uid: &str, phase: RunPhase) -> Claims {
        Claims {
            namespace: "ns".into(),
            task: "t".into(),
            uid: uid.into(),
            phase,
            attempt: 1,
            budget: Limits::default(),
        }
    }

    #[test]
    fn a_million_input_tokens_at_three_dollars_cost_three_dollars_exactly() {
        let f = price(
            &Tokens {
                input: 1_000_000,
                ..Tokens::default()
            },
            Some(&sonnet()),
        );
        assert_eq!(f.cost_pico_usd, 3_000_000 * PICO_PER_MICRO);
        assert_eq!(f.cost_usd(), "3");
    }

    #[test]
    fn one_cache_read_token_at_thirty_cents_costs_three_tenths_of_a_microdollar() {
        let f = price(
            &Tokens {
                cache_read: 1,
                ..Tokens::default()
            },
            Some(&sonnet()),
        );
        assert_eq!(f.cost_pico_usd, 300_000);
        assert_eq!(f.unpriced_tokens, 0);
    }

    #[test]
    fn the_scripted_implementer_costs_what_the_cli_computes() {
        // implementer-happy: 1670 in, 180 out, 3000 cache write, 13100 cache read.
        let f = price(
            &Tokens {
                input: 1670,
                output: 180,
                cache_creation: 3000,
                cache_read: 13100,
            },
            Some(&sonnet()),
        );
        assert_eq!(f.cost_pico_usd, 22_890_000_000);
        assert_eq!(f.cost_usd(), "0.02289");
    }

    #[test]
    fn an_unknown_model_counts_as_unpriced_tokens() {
        let f = price(
            &Tokens {
                input: 10,
                output: 5,
                ..Tokens::default()
            },
            None,
        );
        assert_eq!((f.cost_pico_usd, f.unpriced_tokens), (0, 15));
        let broken = row("m", "not money", "1", "1", "1");
        assert_eq!(
            price(
                &Tokens {
                    input: 3,
                    ..Tokens::default()
                },
                Some(&broken)
            )
            .unpriced_tokens,
            3
        );
    }

    #[test]
    fn a_reached_limit_refuses_with_its_description() {
        let limits = Limits {
            tokens: Some(1000),
            ..Limits::default()
        };
        let used = Figures {
            input_tokens: 1000,
            ..Figures::default()
        };
        let err = judge(&limits, &used, Some("claude-sonnet-4-5"), &spec());
        assert_eq!(err, Err(BudgetRefusal::Spent("tokens 1000 of 1000".into())));
        assert_eq!(
            err.err().map(|e| e.message()).unwrap_or_default(),
            "Hermes gateway: the task's budget is spent (tokens 1000 of 1000); no further model requests are forwarded"
        );
        let under = Figures {
            input_tokens: 999,
            ..Figures::default()
        };
        assert_eq!(judge(&limits, &under, Some("x"), &spec()), Ok(()));
        let turns = Limits {
            turns: Some(2),
            ..Limits::default()
        };
        let two = Figures {
            turns: 2,
            ..Figures::default()
        };
        assert!(matches!(
            judge(&turns, &two, None, &spec()),
            Err(BudgetRefusal::Spent(_))
        ));
    }

    #[test]
    fn a_cost_limit_refuses_models_without_a_price() {
        let limits = Limits {
            cost_micros: Some(1_000_000),
            ..Limits::default()
        };
        let none = Figures::default();
        assert_eq!(
            judge(&limits, &none, Some("claude-sonnet-4-5-20250929"), &spec()),
            Ok(())
        );
        assert_eq!(
            judge(&limits, &none, Some("gpt-9"), &spec()),
            Err(BudgetRefusal::Unpriceable("gpt-9".into()))
        );
        assert!(judge(&limits, &none, None, &spec()).is_err());
        // Without a cost limit any model goes.
        assert_eq!(
            judge(&Limits::default(), &none, Some("gpt-9"), &spec()),
            Ok(())
        );
    }

    #[test]
    fn counters_are_kept_per_task_and_phase_and_reported() {
        let m = Meters::default();
        let a = claims("u1", RunPhase::Implement);
        let b = claims("u1", RunPhase::Review);
        m.add_turn(&a);
        m.add(
            &a,
            &Figures {
                input_tokens: 5,
                ..Figures::default()
            },
        );
        m.add_turn(&b);
        m.add_refusal(&b);
        assert_eq!(m.live(&a).turns, 1);
        assert_eq!(m.live(&a).input_tokens, 5);
        assert_eq!(m.live(&b).input_tokens, 0);
        let r = m.report("inst", None);
        assert_eq!(r.entries.len(), 2);
        assert_eq!(r.entries[1].refused_for_budget, 1);
        assert!(m.report("inst", Some("u2")).entries.is_empty());
        assert_eq!(m.report("inst", Some("u1")).entries.len(), 2);
    }

    #[test]
    fn only_idle_counters_of_ended_tasks_are_evicted() {
        let m = Meters::default();
        m.add_turn(&claims("ended", RunPhase::Implement));
        m.add_turn(&claims("running", RunPhase::Implement));
        let now = Instant::now();
        assert_eq!(m.evict(now, |_, _, _| false), 0, "not idle yet");
        let later = now + IDLE_EVICTION + Duration::from_secs(1);
        assert_eq!(m.evict(later, |_, _, uid| uid == "running"), 1);
        assert_eq!(m.report("i", None).entries[0].uid, "running");
    }
}
