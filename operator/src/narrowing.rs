//! A task may narrow its profile, never widen it. This computes the effective
//! settings of a run — timeouts, budget, per-phase egress — or the first field
//! of the task that asks for more than the profile allows.

use std::time::Duration;

use hermes_crds::profile::HermesProfileSpec;
use hermes_crds::validation::{Cidr, ValidationError};
use hermes_crds::{EgressRule, HermesTaskSpec, RunPhase};
use ipnet::IpNet;

/// Built-in timeouts (default, max) of a phase whose profile sets none.
pub fn builtin_timeout(phase: RunPhase) -> (Duration, Duration) {
    let m = |mins: u64| Duration::from_secs(mins * 60);
    match phase {
        RunPhase::Prepare => (m(10), m(30)),
        RunPhase::Implement => (m(30), m(120)),
        RunPhase::Review => (m(15), m(60)),
        RunPhase::Publish => (m(10), m(30)),
    }
}

/// The effective agent budget: each limit, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EffectiveBudget {
    /// Most tokens.
    pub tokens: Option<i64>,
    /// Most cost, in millionths of a dollar.
    pub cost_micros: Option<u64>,
    /// Most turns.
    pub turns: Option<i32>,
}

/// What a run is allowed, once the task has narrowed its profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effective {
    /// Time limit of each phase, in [`RunPhase::ALL`] order.
    pub timeouts: [Duration; 4],
    /// The agent's budget.
    pub budget: EffectiveBudget,
    /// Egress allowlist of each phase, in [`RunPhase::ALL`] order.
    pub egress: [Vec<EgressRule>; 4],
}

impl Effective {
    /// The time limit of a phase.
    pub fn timeout(&self, phase: RunPhase) -> Duration {
        self.timeouts[phase as usize]
    }

    /// The egress allowlist of a phase.
    pub fn egress(&self, phase: RunPhase) -> &[EgressRule] {
        &self.egress[phase as usize]
    }
}

/// Why a task cannot run under its profile.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The task asks for more than the profile allows.
    #[error("{field}: {message}")]
    Widens {
        /// The task's field, as a JSON path.
        field: String,
        /// What it asks and what is allowed.
        message: String,
    },
    /// A value of the task or profile does not parse (admission normally
    /// prevents this; a rule may have tightened since).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

fn widens(field: impl Into<String>, message: impl Into<String>) -> Violation {
    Violation::Widens {
        field: field.into(),
        message: message.into(),
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (h, 0, 0) if h > 0 => format!("{h}h"),
        (0, m, 0) if m > 0 => format!("{m}m"),
        (0, 0, s) => format!("{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// Computes the effective settings of `task` under `profile`.
pub fn effective(
    task: &HermesTaskSpec,
    profile: &HermesProfileSpec,
) -> Result<Effective, Violation> {
    let mut timeouts = [Duration::ZERO; 4];
    for phase in RunPhase::ALL {
        let (mut default, mut max) = builtin_timeout(phase);
        if let Some(bounds) = profile.timeouts.get(phase) {
            let f = format!("profile spec.timeouts.{}", phase.as_str());
            default = bounds.default.duration(&format!("{f}.default"))?;
            max = bounds.max.duration(&format!("{f}.max"))?;
        }
        let chosen = match task.timeouts.as_ref().and_then(|t| t.get(phase)) {
            Some(t) => {
                let field = format!("spec.timeouts.{}", phase.as_str());
                let asked = t.duration(&field)?;
                if asked > max {
                    return Err(widens(
                        field,
                        format!(
                            "asks for {}, the profile allows at most {}",
                            human(asked),
                            human(max)
                        ),
                    ));
                }
                asked
            }
            None => default.min(max),
        };
        timeouts[phase as usize] = chosen;
    }

    let budget = effective_budget(task, profile)?;

    let mut egress: [Vec<EgressRule>; 4] = Default::default();
    for phase in RunPhase::ALL {
        egress[phase as usize] = profile.egress.get(phase).to_vec();
    }
    if let Some(rules) = &task.egress {
        egress[RunPhase::Implement as usize] = narrow_egress(rules, &profile.egress.implement)?;
    }
    if let Some(rules) = &task.egress_hosts {
        narrow_hosts(rules, &profile.egress.hosts.implement)?;
    }
    for phase in [RunPhase::Prepare, RunPhase::Publish] {
        let hosts = profile.egress.hosts.get(phase);
        if !hosts.is_empty() {
            git_through_proxy(&task.repo.url.0, hosts, phase)?;
        }
    }

    Ok(Effective {
        timeouts,
        budget,
        egress,
    })
}

/// A task's limit within the profile's cap: what it asks for (never above
/// the cap), else the profile's default, else the cap.
fn capped<T: PartialOrd + Copy + std::fmt::Display>(
    asked: Option<T>,
    default: Option<T>,
    max: Option<T>,
    field: &str,
    unit: &str,
) -> Result<Option<T>, Violation> {
    match (asked, max) {
        (Some(a), Some(m)) if a > m => Err(widens(
            field,
            format!("asks for {a} {unit}, the profile allows at most {m}"),
        )),
        (Some(a), _) => Ok(Some(a)),
        (None, m) => Ok(default.or(m)),
    }
}

fn effective_budget(
    task: &HermesTaskSpec,
    profile: &HermesProfileSpec,
) -> Result<EffectiveBudget, Violation> {
    let (pd, pm) = (&profile.budget.default, &profile.budget.max);
    let asked = task.budget.clone().unwrap_or_default();

    let tokens = capped(
        asked.tokens,
        pd.tokens,
        pm.tokens,
        "spec.budget.tokens",
        "tokens",
    )?;
    let turns = capped(
        asked.turns,
        pd.turns,
        pm.turns,
        "spec.budget.turns",
        "turns",
    )?;
    let micros =
        |u: &Option<hermes_crds::validation::Usd>, field: &str| -> Result<Option<u64>, Violation> {
            u.as_ref()
                .map(|u| u.micros(field))
                .transpose()
                .map_err(Violation::from)
        };
    let max_cost = micros(&pm.cost_usd, "profile spec.budget.max.costUsd")?;
    let cost_micros = match (micros(&asked.cost_usd, "spec.budget.costUsd")?, max_cost) {
        (Some(a), Some(max)) if a > max => {
            return Err(widens(
                "spec.budget.costUsd",
                format!(
                    "asks for ${}, the profile allows at most ${}",
                    hermes_crds::validation::Usd::from_micros(a).0,
                    hermes_crds::validation::Usd::from_micros(max).0
                ),
            ));
        }
        (Some(a), _) => Some(a),
        (None, max) => micros(&pd.cost_usd, "profile spec.budget.default.costUsd")?.or(max),
    };
    Ok(EffectiveBudget {
        tokens,
        cost_micros,
        turns,
    })
}

fn contains(outer: &IpNet, inner: &IpNet) -> bool {
    outer.contains(inner)
}

/// Each task rule must lie inside one profile rule: its network inside the
/// profile's, its ports among that rule's ports. The profile's exceptions
/// that fall inside the task's network are kept.
fn narrow_egress(
    task_rules: &[EgressRule],
    profile_rules: &[EgressRule],
) -> Result<Vec<EgressRule>, Violation> {
    let mut out = Vec::with_capacity(task_rules.len());
    for (i, rule) in task_rules.iter().enumerate() {
        let field = format!("spec.egress[{i}]");
        let net = rule.cidr.parse(&format!("{field}.cidr"))?;
        let mut allowed_by = None;
        for p in profile_rules {
            let pnet = p.cidr.parse("profile spec.egress.implement[].cidr")?;
            let ports_ok = rule.ports.iter().all(|port| p.ports.contains(port));
            if contains(&pnet, &net) && ports_ok {
                allowed_by = Some((p, pnet));
                break;
            }
        }
        let Some((profile_rule, _)) = allowed_by else {
            return Err(widens(
                field,
                format!(
                    "{} on ports {} is not inside the profile's implement egress allowlist",
                    rule.cidr,
                    rule.ports
                        .iter()
                        .map(|p| p.port.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ));
        };
        let mut except: Vec<Cidr> = rule.except.clone();
        for e in &profile_rule.except {
            let enet = e.parse("profile spec.egress.implement[].except[]")?;
            if contains(&net, &enet) && !except.contains(e) {
                except.push(e.clone());
            } else if contains(&enet, &net) {
                return Err(widens(
                    format!("{field}.cidr"),
                    format!(
                        "{} lies inside {}, which the profile excludes",
                        rule.cidr, e
                    ),
                ));
            }
        }
        out.push(EgressRule {
            cidr: rule.cidr.clone(),
            except,
            ports: rule.ports.clone(),
        });
    }
    Ok(out)
}

/// Each task host rule must lie inside one of the profile's implement host
/// rules (the gateway's proxy applies the same test, and ignores a rule
/// that does not).
fn narrow_hosts(
    task_rules: &[hermes_crds::hosts::HostRule],
    profile_rules: &[hermes_crds::hosts::HostRule],
) -> Result<(), Violation> {
    for (i, rule) in task_rules.iter().enumerate() {
        if !profile_rules.iter().any(|p| rule.within(p)) {
            let ports: Vec<String> = rule.ports.iter().map(i32::to_string).collect();
            return Err(widens(
                format!("spec.egressHosts[{i}]"),
                format!(
                    "{} on ports {} is not inside the profile's implement host allowlist",
                    rule.name.0,
                    ports.join(",")
                ),
            ));
        }
    }
    Ok(())
}

/// A git phase whose profile lists hosts reaches the remote through the
/// gateway's egress proxy and nothing else: the remote must be `https://`
/// (libgit2 sends plain-HTTP and SSH traffic straight to the host, never to
/// a proxy) and its host and port must be in the phase's list. Found here,
/// the task is refused before any pod starts, instead of failing in prepare.
fn git_through_proxy(
    url: &str,
    hosts: &[hermes_crds::hosts::HostRule],
    phase: RunPhase,
) -> Result<(), Violation> {
    const FIELD: &str = "spec.repo.url";
    let list = format!("egress.hosts.{}", phase.as_str());
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(widens(
            FIELD,
            format!(
                "the profile sends {} through the gateway's egress proxy ({list}), which carries https:// remotes only",
                phase.as_str()
            ),
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !authority.starts_with('[') => (h, p.parse::<u16>().ok()),
        _ => (authority, Some(443)),
    };
    match port {
        Some(port) if hermes_crds::hosts::allowed(hosts, host, port) => Ok(()),
        _ => Err(widens(
            FIELD,
            format!("{authority} is not in the profile's {list}"),
        )),
    }
}

#[cfg(test)]
mod tests;
