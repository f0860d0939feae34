//! Regenerates the generated parts of `charts/hermes/values.schema.json`
//! (the default profile's spec from the HermesProfile CRD; `affinity` and
//! `tolerations` from the Kubernetes types), after a change to the CRD:
//!
//! ```text
//! cargo run -p hermes-e2e --bin chart-values-schema
//! ```
//!
//! The chart tests fail while the checked-in file differs from what this
//! writes.

fn main() -> Result<(), String> {
    let text = hermes_e2e::chart::values_schema_generated()?;
    let path = hermes_e2e::chart::chart_dir().join("values.schema.json");
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
