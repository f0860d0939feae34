use super::*;
use serde_json::json;

fn caps(max_running: i32, max_awaiting_review: i32) -> Concurrency {
    Concurrency {
        max_running,
        max_awaiting_review,
    }
}

/// A task `name` created at second `created`, in `phase`, with spec extras.
fn task(name: &str, created: i64, phase: Option<&str>, extra: serde_json::Value) -> HermesTask {
    let mut spec = json!({
        "repo": {"url": "https://git.example.com/o/r.git", "baseRef": "main"},
        "task": "do it",
        "scope": ["src/**"],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let ts = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + created).expect("a time");
    let mut v = json!({
        "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesTask",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                     "creationTimestamp": ts.to_string()},
        "spec": spec,
    });
    if let Some(p) = phase {
        v["status"] = json!({"phase": p});
    }
    serde_json::from_value(v).expect("task")
}

fn peers(tasks: &[HermesTask]) -> Vec<Arc<HermesTask>> {
    tasks.iter().cloned().map(Arc::new).collect()
}

fn granted(a: &Admission) -> bool {
    *a == Admission::Granted
}

fn reason(a: &Admission) -> &'static str {
    match a {
        Admission::Granted => "Granted",
        Admission::Waiting { reason, .. } | Admission::Blocked { reason, .. } => reason,
    }
}

#[test]
fn a_task_starts_while_places_are_free_and_waits_when_they_are_taken() {
    let running = [
        task("r1", 0, Some("Implementing"), json!({})),
        task("r2", 1, Some("Reviewing"), json!({})),
    ];
    let me = task("me", 5, None, json!({}));
    let mut all = running.to_vec();
    all.push(me.clone());
    let none = HashSet::new();
    assert!(granted(&assess(
        &me,
        Request::Start,
        "default",
        &caps(3, 20),
        &peers(&all),
        &none
    )));
    let a = assess(
        &me,
        Request::Start,
        "default",
        &caps(2, 20),
        &peers(&all),
        &none,
    );
    assert_eq!(reason(&a), reasons::MAX_RUNNING);
    // Terminal and awaiting tasks hold no running place.
    let mut ended = vec![
        task("s", 0, Some("Succeeded"), json!({})),
        task("f", 0, Some("Failed"), json!({})),
        task("w", 0, Some("AwaitingApproval"), json!({})),
        me.clone(),
    ];
    assert!(granted(&assess(
        &me,
        Request::Start,
        "default",
        &caps(1, 20),
        &peers(&ended),
        &none
    )));
    // Another profile's tasks do not count.
    ended.push(task(
        "other",
        0,
        Some("Preparing"),
        json!({"profile": "other"}),
    ));
    assert!(granted(&assess(
        &me,
        Request::Start,
        "default",
        &caps(1, 20),
        &peers(&ended),
        &none
    )));
}

#[test]
fn a_grant_the_cache_does_not_show_yet_holds_its_place() {
    let a = task("a", 0, Some("Queued"), json!({}));
    let me = task("me", 5, None, json!({}));
    let all = [a.clone(), me.clone()];
    let mut g = HashSet::new();
    g.insert("uid-a".to_owned());
    // `a` was granted by another reconcile; the cache still says Queued.
    let answer = assess(
        &me,
        Request::Start,
        "default",
        &caps(1, 20),
        &peers(&all),
        &g,
    );
    assert_eq!(reason(&answer), reasons::MAX_RUNNING);
}

#[test]
fn the_ledger_never_gives_one_place_twice() {
    let ledger = Ledger::default();
    let a = task("a", 0, Some("Queued"), json!({}));
    let b = task("b", 1, Some("Queued"), json!({}));
    let all = peers(&[a.clone(), b.clone()]);
    assert!(granted(&ledger.admit(
        &a,
        Request::Start,
        &caps(1, 20),
        || all.clone()
    )));
    // The cache has not seen `a` start: b must still wait.
    assert_eq!(
        reason(&ledger.admit(&b, Request::Start, &caps(1, 20), || all.clone())),
        reasons::MAX_RUNNING
    );
    // `a` gives its place back (it did not start after all): b gets it.
    ledger.release(&a);
    let without_a = peers(std::slice::from_ref(&b));
    assert!(granted(&ledger.admit(
        &b,
        Request::Start,
        &caps(1, 20),
        || without_a.clone()
    )));
    // Once the cache shows b running, the grant is forgotten and counted once.
    let b_running = task("b", 1, Some("Preparing"), json!({}));
    let c = task("c", 2, None, json!({}));
    let now = peers(&[b_running, c.clone()]);
    assert_eq!(
        reason(&ledger.admit(&c, Request::Start, &caps(1, 20), || now.clone())),
        reasons::MAX_RUNNING
    );
    assert!(granted(&ledger.admit(
        &c,
        Request::Start,
        &caps(2, 20),
        || now.clone()
    )));
}

#[test]
fn the_queue_goes_by_priority_then_age_then_name() {
    let old_low = task("old-low", 0, Some("Queued"), json!({"priority": -5}));
    let young_high = task("young-high", 50, Some("Queued"), json!({"priority": 10}));
    let mid_b = task("mid-b", 20, Some("Queued"), json!({}));
    let mid_a = task("mid-a", 20, Some("Queued"), json!({}));
    let all = [
        old_low.clone(),
        young_high.clone(),
        mid_b.clone(),
        mid_a.clone(),
    ];
    let none = HashSet::new();
    let order = ["young-high", "mid-a", "mid-b", "old-low"];
    for (places, expected) in (1..=4).zip(order) {
        // With `places` free, exactly the first `places` tasks of the order may start.
        for t in &all {
            let ok = granted(&assess(
                t,
                Request::Start,
                "default",
                &caps(places, 20),
                &peers(&all),
                &none,
            ));
            let rank = order
                .iter()
                .position(|n| *n == t.name_any())
                .expect("ranked");
            assert_eq!(
                ok,
                rank < usize::try_from(places).expect("small"),
                "{} with {places} place(s) (expected head: {expected})",
                t.name_any()
            );
        }
    }
}

#[test]
fn tasks_not_looked_at_yet_are_in_the_queue_but_not_those_held_back_by_their_own_problem() {
    let older_new = task("older", 0, None, json!({}));
    let me = task("me", 5, None, json!({}));
    let none = HashSet::new();
    let all = [older_new.clone(), me.clone()];
    assert_eq!(
        reason(&assess(
            &me,
            Request::Start,
            "default",
            &caps(1, 20),
            &peers(&all),
            &none
        )),
        reasons::MAX_RUNNING
    );
    let mut stuck = older_new.clone();
    stuck.status = Some(serde_json::from_value(json!({
        "phase": "Pending",
        "conditions": [{"type": "Admitted", "status": "False", "reason": "TaskFileNotFound", "message": "m",
                        "lastTransitionTime": "2027-01-15T08:00:00Z"}]
    })).expect("status"));
    let all = [stuck, me.clone()];
    assert!(granted(&assess(
        &me,
        Request::Start,
        "default",
        &caps(1, 20),
        &peers(&all),
        &none
    )));
    // A cancelled task is not in the queue either.
    let mut cancelled = older_new;
    cancelled.metadata.annotations =
        Some([(ANNOTATION_CANCEL.to_owned(), "yes".to_owned())].into());
    let all = [cancelled, me.clone()];
    assert!(granted(&assess(
        &me,
        Request::Start,
        "default",
        &caps(1, 20),
        &peers(&all),
        &none
    )));
}

#[test]
fn while_review_places_are_full_no_task_starts() {
    let w1 = task("w1", 0, Some("AwaitingApproval"), json!({}));
    let w2 = task("w2", 1, Some("AwaitingApproval"), json!({}));
    let me = task("me", 5, None, json!({}));
    let all = [w1, w2, me.clone()];
    let none = HashSet::new();
    let a = assess(
        &me,
        Request::Start,
        "default",
        &caps(10, 2),
        &peers(&all),
        &none,
    );
    assert_eq!(reason(&a), reasons::MAX_AWAITING_REVIEW);
    assert!(granted(&assess(
        &me,
        Request::Start,
        "default",
        &caps(10, 3),
        &peers(&all),
        &none
    )));
}

#[test]
fn running_manual_reviews_hold_a_review_place_so_the_cap_holds_at_every_moment() {
    let manual = json!({"review": {"mode": "manual"}});
    let w = task("w", 0, Some("AwaitingApproval"), manual.clone());
    let r = task("r", 1, Some("Implementing"), manual.clone());
    let me = task("me", 5, None, manual.clone());
    let none = HashSet::new();
    let all = [w.clone(), r.clone(), me.clone()];
    // 1 awaiting + 1 that may come = 2: a third manual task would make 3.
    let a = assess(
        &me,
        Request::Start,
        "default",
        &caps(10, 2),
        &peers(&all),
        &none,
    );
    assert_eq!(reason(&a), reasons::MAX_AWAITING_REVIEW);
    assert!(granted(&assess(
        &me,
        Request::Start,
        "default",
        &caps(10, 3),
        &peers(&all),
        &none
    )));
    // An auto-reviewed task never waits for a person: it may start while a place is left.
    let auto = task("auto", 5, None, json!({}));
    let all = [w, r, auto.clone()];
    assert!(granted(&assess(
        &auto,
        Request::Start,
        "default",
        &caps(10, 2),
        &peers(&all),
        &none
    )));
}

#[test]
fn an_approved_task_publishes_before_the_queue_starts() {
    let manual = json!({"review": {"mode": "manual"}});
    let mut approved = task("approved", 100, Some("AwaitingApproval"), manual);
    approved.status = Some(serde_json::from_value(json!({
        "phase": "AwaitingApproval",
        "review": {"verdict": "approve", "reviewedCommit": "0123456789abcdef0123456789abcdef01234567"},
    })).expect("status"));
    approved.metadata.annotations = Some(
        [(
            ANNOTATION_APPROVE.to_owned(),
            "0123456789abcdef0123456789abcdef01234567".to_owned(),
        )]
        .into(),
    );
    assert_eq!(request(&approved, true), Some(Request::Resume));
    let queued = task("queued", 0, Some("Queued"), json!({"priority": 1000}));
    let all = [approved.clone(), queued.clone()];
    let none = HashSet::new();
    assert!(granted(&assess(
        &approved,
        Request::Resume,
        "default",
        &caps(1, 20),
        &peers(&all),
        &none
    )));
    assert_eq!(
        reason(&assess(
            &queued,
            Request::Start,
            "default",
            &caps(1, 20),
            &peers(&all),
            &none
        )),
        reasons::MAX_RUNNING
    );
    // With no place at all, the approved task waits too.
    let busy = task("busy", 0, Some("Publishing"), json!({}));
    let all = [approved.clone(), busy];
    assert_eq!(
        reason(&assess(
            &approved,
            Request::Resume,
            "default",
            &caps(1, 20),
            &peers(&all),
            &none
        )),
        reasons::MAX_RUNNING
    );
}

#[test]
fn dependencies_wait_fail_and_cycles_are_refused() {
    let none = HashSet::new();
    let me = task("me", 5, None, json!({"dependsOn": ["a", "b"]}));
    let a_running = task("a", 0, Some("Implementing"), json!({}));
    let b_done = task(
        "b",
        0,
        Some("Succeeded"),
        json!({"publish": {"mode": "branch"}}),
    );
    let all = [a_running, b_done.clone(), me.clone()];
    let w = assess(
        &me,
        Request::Start,
        "default",
        &caps(10, 20),
        &peers(&all),
        &none,
    );
    assert_eq!(reason(&w), reasons::WAITING_FOR_DEPENDENCIES);
    let Admission::Waiting { message, .. } = w else {
        unreachable!()
    };
    assert!(
        message.contains('a') && !message.contains("b,"),
        "{message}"
    );

    // A merged dependency counts only once its merge is pushed.
    let mut a_merged = task("a", 0, Some("Succeeded"), json!({}));
    a_merged.status = Some(
        serde_json::from_value(json!({"phase": "Succeeded", "publish": {"pushed": false}}))
            .expect("status"),
    );
    let all = [a_merged.clone(), b_done.clone(), me.clone()];
    let w = assess(
        &me,
        Request::Start,
        "default",
        &caps(10, 20),
        &peers(&all),
        &none,
    );
    assert_eq!(reason(&w), reasons::WAITING_FOR_DEPENDENCIES);
    a_merged.status = Some(
        serde_json::from_value(json!({"phase": "Succeeded", "publish": {"pushed": true}}))
            .expect("status"),
    );
    let all = [a_merged, b_done.clone(), me.clone()];
    assert!(granted(&assess(
        &me,
        Request::Start,
        "default",
        &caps(10, 20),
        &peers(&all),
        &none
    )));

    // A missing dependency is waited for; a failed one fails the task.
    let all = [b_done.clone(), me.clone()];
    let Admission::Waiting { message, .. } = assess(
        &me,
        Request::Start,
        "default",
        &caps(10, 20),
        &peers(&all),
        &none,
    ) else {
        panic!("waits")
    };
    assert!(message.contains("a (does not exist)"), "{message}");
    let a_rejected = task("a", 0, Some("Rejected"), json!({}));
    let all = [a_rejected, b_done, me.clone()];
    let b = assess(
        &me,
        Request::Start,
        "default",
        &caps(10, 20),
        &peers(&all),
        &none,
    );
    assert_eq!(reason(&b), reasons::DEPENDENCY_FAILED);

    // Cycles, direct and through others, including onto itself.
    let x = task("x", 0, None, json!({"dependsOn": ["y"]}));
    let y = task("y", 0, None, json!({"dependsOn": ["z"]}));
    let z = task("z", 0, None, json!({"dependsOn": ["x"]}));
    let all = [x.clone(), y, z];
    let c = assess(
        &x,
        Request::Start,
        "default",
        &caps(10, 20),
        &peers(&all),
        &none,
    );
    assert_eq!(reason(&c), reasons::DEPENDENCY_CYCLE);
    let Admission::Blocked { message, .. } = c else {
        unreachable!()
    };
    assert_eq!(message, "dependsOn forms a cycle: x → y → z → x");
    let selfish = task("s", 0, None, json!({"dependsOn": ["s"]}));
    let all = std::slice::from_ref(&selfish);
    assert_eq!(
        reason(&assess(
            &selfish,
            Request::Start,
            "default",
            &caps(10, 20),
            &peers(all),
            &none
        )),
        reasons::DEPENDENCY_CYCLE
    );
    // A task that depends on a cycle (but is not in it) waits.
    let outside = task("o", 0, None, json!({"dependsOn": ["x"]}));
    let all = [x, outside.clone()];
    assert_eq!(
        reason(&assess(
            &outside,
            Request::Start,
            "default",
            &caps(10, 20),
            &peers(&all),
            &none
        )),
        reasons::WAITING_FOR_DEPENDENCIES
    );
}

#[test]
fn waiting_on_dependencies_does_not_hold_the_queue() {
    let blocked = task(
        "blocked",
        0,
        Some("Queued"),
        json!({"dependsOn": ["later"]}),
    );
    let later = task("later", 1, Some("Implementing"), json!({}));
    let me = task("me", 5, None, json!({}));
    let all = [blocked, later, me.clone()];
    assert!(granted(&assess(
        &me,
        Request::Start,
        "default",
        &caps(2, 20),
        &peers(&all),
        &HashSet::new()
    )));
}

#[test]
fn the_scheduler_wakes_exactly_the_tasks_a_place_is_free_for() {
    let ledger = Ledger::default();
    let r = task("r", 0, Some("Implementing"), json!({}));
    let q1 = task("q1", 1, Some("Queued"), json!({}));
    let q2 = task("q2", 2, Some("Queued"), json!({"priority": 5}));
    let q3 = task("q3", 3, Some("Queued"), json!({}));
    let dep = task("dep", 4, Some("Queued"), json!({"dependsOn": ["r"]}));
    let other = task("other", 0, Some("Queued"), json!({"profile": "p2"}));
    let all = peers(&[r, q1, q2, q3, dep, other]);
    let names = |v: Vec<Arc<HermesTask>>| v.iter().map(|t| t.name_any()).collect::<Vec<_>>();
    // Caps not known yet: the head only.
    assert_eq!(names(ledger.heads("ns", "default", || all.clone())), ["q2"]);
    // Known (from an assessment): two places, one taken by r, one free for q2.
    let q3 = all
        .iter()
        .find(|t| t.name_any() == "q3")
        .expect("q3")
        .clone();
    assert_eq!(
        reason(&ledger.admit(&q3, Request::Start, &caps(2, 20), || all.clone())),
        reasons::MAX_RUNNING
    );
    assert_eq!(names(ledger.heads("ns", "default", || all.clone())), ["q2"]);
    // A grant the cache does not show yet is neither woken again nor given away twice.
    let q2 = all
        .iter()
        .find(|t| t.name_any() == "q2")
        .expect("q2")
        .clone();
    assert!(granted(&ledger.admit(
        &q2,
        Request::Start,
        &caps(2, 20),
        || all.clone()
    )));
    assert!(ledger.heads("ns", "default", || all.clone()).is_empty());
    // One more place (caps raised): q1 is next, q3 still waits.
    assert_eq!(
        reason(&ledger.admit(&q3, Request::Start, &caps(3, 20), || all.clone())),
        reasons::MAX_RUNNING
    );
    assert_eq!(names(ledger.heads("ns", "default", || all.clone())), ["q1"]);
    // Dependents of a task that ended, not yet ended themselves.
    assert_eq!(names(dependents("ns", "r", &all)), ["dep"]);
    assert!(dependents("ns", "q1", &all).is_empty());
}

/// The scheduler walks one line per profile; each task's own assessment
/// walks it too. Over many generated situations (phases, priorities, ages,
/// manual reviews, approvals, dependencies, caps), the tasks the scheduler
/// wakes are exactly the waiting tasks whose own assessment grants them, in
/// admission order.
#[test]
fn the_scheduler_wakes_exactly_those_each_assessment_grants() {
    const REVIEWED: &str = "0123456789abcdef0123456789abcdef01234567";
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let phases = [
        None,
        Some("Pending"),
        Some("Queued"),
        Some("Preparing"),
        Some("Implementing"),
        Some("Reviewing"),
        Some("AwaitingApproval"),
        Some("Publishing"),
        Some("Succeeded"),
        Some("Failed"),
    ];
    for round in 0..300 {
        let n = 1 + next(24);
        let mut tasks = Vec::new();
        for i in 0..n {
            let name = format!("t{i}");
            let mut extra = json!({"priority": next(3) as i32});
            if next(3) == 0 {
                extra["review"] = json!({"mode": "manual"});
            }
            if next(6) == 0 && i > 0 {
                extra["dependsOn"] = json!([format!("t{}", next(i))]);
            }
            let phase = phases[next(phases.len() as u64) as usize];
            let mut t = task(&name, next(5) as i64, phase, extra);
            if phase == Some("AwaitingApproval") {
                t.status = Some(
                    serde_json::from_value(json!({
                        "phase": "AwaitingApproval",
                        "review": {"verdict": "approve", "reviewedCommit": REVIEWED},
                    }))
                    .expect("status"),
                );
                if next(2) == 0 {
                    t.metadata.annotations =
                        Some([(ANNOTATION_APPROVE.to_owned(), REVIEWED.to_owned())].into());
                }
            }
            tasks.push(t);
        }
        let all = peers(&tasks);
        let limits = caps(1 + next(16) as i32, 1 + next(6) as i32);
        let ledger = Ledger::default();
        // The caps become known to the ledger through one assessment (of a
        // task that is not among them: its grant is forgotten at once).
        let primer = task("primer", 0, None, json!({}));
        let _ = ledger.admit(&primer, Request::Start, &limits, Vec::new);
        let woken: Vec<String> = ledger
            .heads("ns", "default", || all.clone())
            .iter()
            .map(|t| t.name_any())
            .collect();
        let mut expected: Vec<&Arc<HermesTask>> = all
            .iter()
            .filter(|t| {
                let Some(r) = request(t, false) else {
                    return false;
                };
                let r = if phase(t) == Some(TaskPhase::AwaitingApproval) {
                    Request::Resume
                } else {
                    r
                };
                granted(&assess(t, r, "default", &limits, &all, &HashSet::new()))
            })
            .collect();
        expected.sort_by_key(|t| (phase(t) != Some(TaskPhase::AwaitingApproval), order_key(t)));
        let expected: Vec<String> = expected.iter().map(|t| t.name_any()).collect();
        assert_eq!(woken, expected, "round {round}: {limits:?}");
    }
}

/// The cache is read under the ledger's lock, never before it: a snapshot
/// read before could be older than one a concurrent call forgot a grant by
/// (that task shown started), and would count that task nowhere.
#[test]
fn the_peers_are_read_under_the_ledgers_lock() {
    let ledger = Ledger::default();
    let a = task("a", 0, Some("Queued"), json!({}));
    let all = peers(std::slice::from_ref(&a));
    let mut locked = false;
    let _ = ledger.admit(&a, Request::Start, &caps(1, 20), || {
        locked = ledger.inner.try_lock().is_err();
        all.clone()
    });
    assert!(locked, "admit read the cache outside its lock");
    let mut locked = false;
    let _ = ledger.heads("ns", "default", || {
        locked = ledger.inner.try_lock().is_err();
        all.clone()
    });
    assert!(locked, "heads read the cache outside its lock");
}
