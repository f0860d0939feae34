//! `hermes-model-server`: serves the scripted model API (see the library).

use std::path::PathBuf;
use std::process::ExitCode;

use hermes_model_server::{Config, Scenarios, Server};

const USAGE: &str = "usage: hermes-model-server [--listen ADDR] [--scenarios DIR] \
[--default-scenario NAME] [--api-key KEY] [--dump-dir DIR] [--break-streams] \
[--event-interval MS] [--quiet] [--list]

  --listen ADDR            address to bind (default 127.0.0.1:8080)
  --scenarios DIR          add the *.yaml/*.json scenarios of DIR to the built-in ones
  --default-scenario NAME  scenario for requests without a /s/<name> prefix
  --api-key KEY            require this key (x-api-key or Bearer), else 401
                           (also read from HERMES_MODEL_SERVER_API_KEY)
  --dump-dir DIR           write every request body to DIR
  --break-streams          cut every SSE stream after its first event (tests the
                           CLI's fallback to a non-streaming request)
  --event-interval MS      pace replies like a model: wait MS before each SSE
                           event (a plain reply waits as long as its stream)
  --quiet                  do not log requests to stderr
  --list                   print the scenario names and exit

The CLI's base URL is http://ADDR/s/<scenario>.";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hermes-model-server: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut listen = "127.0.0.1:8080".to_owned();
    let mut dirs = Vec::new();
    let mut default_scenario = None;
    let mut api_key = std::env::var("HERMES_MODEL_SERVER_API_KEY").ok();
    let mut dump_dir = None;
    let mut log = true;
    let mut list = false;
    let mut break_streams = false;
    let mut event_interval = std::time::Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--listen" => listen = value("--listen")?,
            "--scenarios" => dirs.push(PathBuf::from(value("--scenarios")?)),
            "--default-scenario" => default_scenario = Some(value("--default-scenario")?),
            "--api-key" => api_key = Some(value("--api-key")?),
            "--dump-dir" => dump_dir = Some(PathBuf::from(value("--dump-dir")?)),
            "--quiet" => log = false,
            "--break-streams" => break_streams = true,
            "--event-interval" => {
                let v = value("--event-interval")?;
                let ms: u64 = v
                    .parse()
                    .map_err(|e| format!("--event-interval {v:?}: {e} (milliseconds)"))?;
                event_interval = std::time::Duration::from_millis(ms);
            }
            "--list" => list = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let mut scenarios =
        Scenarios::builtin().map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
    for dir in &dirs {
        scenarios
            .load_dir(dir)
            .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
    }
    if list {
        for n in scenarios.names() {
            println!("{n}");
        }
        return Ok(());
    }
    if let Some(d) = &default_scenario
        && scenarios.get(d).is_none()
    {
        return Err(format!("no scenario named {d:?}"));
    }
    let server = Server::start(Config {
        listen,
        api_key: api_key.filter(|k| !k.is_empty()),
        scenarios,
        default_scenario,
        dump_dir,
        log,
        break_streams,
        event_interval,
    })
    .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
    eprintln!(
        "hermes-model-server: listening on http://{} (base URL http://{}/s/<scenario>)",
        server.addr(),
        server.addr()
    );
    server.wait();
    Ok(())
}
