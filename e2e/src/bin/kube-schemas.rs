//! Writes kubeconform's JSON schemas for every kind a test cluster serves,
//! from its own `/openapi/v3` (the CRDs installed in it included), made
//! strict; nothing is downloaded.
//!
//! ```text
//! cargo run -p hermes-e2e --bin kube-schemas -- DIR [a|b]
//! kubeconform -strict -schema-location 'DIR/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json' FILE...
//! ```
//!
//! The cluster is Tier A unless the second argument says `b`.

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: kube-schemas DIR [a|b]")?;
    let tier = match args.next().as_deref() {
        None | Some("a") => hermes_e2e::Tier::A,
        Some("b") => hermes_e2e::Tier::B,
        Some(other) => return Err(format!("unknown tier {other:?} (expected a or b)")),
    };
    let cluster = hermes_e2e::Cluster::connect_tier(tier)
        .await
        .ok_or("no cluster to read the OpenAPI documents from")?;
    let n = hermes_e2e::chart::kube_schemas(&cluster, std::path::Path::new(&dir))?;
    println!("wrote {n} schemas into {dir}");
    Ok(())
}
