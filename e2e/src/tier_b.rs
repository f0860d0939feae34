//! Tier B support: Hermes as users run it, on a real node.
//!
//! ```text
//!   test process (on the node)                 Tier B cluster
//!   ├─ git remote  NODE:port  (basic auth) ◄── prepare / publish pods
//!   ├─ model server NODE:port (scenarios)  ◄── agent / reviewer (claude -p)
//!   ├─ decoy listener NODE:port (allowed to no one)
//!   └─ kubectl / kube client ──────────────► operator Deployment (image built
//!                                            by images/build, imported into
//!                                            the node's containerd)
//! ```
//!
//! The servers run in the test process, bound to the node's address, which
//! pods reach over the CNI bridge; each profile allows exactly the ports a
//! phase needs. The operator is installed once per test process with the
//! Helm chart (`charts/hermes`, through `e2e/cluster/install-operator`) with
//! the image references `scripts/test` exports (`HERMES_IMAGE_OPERATOR`,
//! `_RUNNER`, `_AGENT`, `_REVIEWER`), or, without them, that `images/build`
//! prints (after importing them).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hermes_crds::task::HermesTask;
use hermes_git_server::{self as fixture, GitServer, PUSH_USER, READ_USER};
use hermes_model_server::{Record, Scenarios, Server};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::{Cluster, Error, TEST_FIELD_MANAGER, TestNamespace, Tier, repo_root};

/// The images of one build, by role.
#[derive(Clone, Debug)]
pub struct Images {
    /// The operator.
    pub operator: String,
    /// The runner (prepare, context, verdict, publish, collect).
    pub runner: String,
    /// The implementing agent (Claude Code).
    pub agent: String,
    /// The reviewer (Claude Code).
    pub reviewer: String,
    /// The Hermes gateway.
    pub gateway: String,
}

impl Images {
    /// From `HERMES_IMAGE_<ROLE>` when all four are set (as `scripts/test`
    /// exports them), else by running `images/build --print-refs` and
    /// `images/import` into Tier B's containerd (both no-ops when nothing
    /// changed).
    pub fn resolve() -> Result<Self, String> {
        let var = |role: &str| std::env::var(format!("HERMES_IMAGE_{role}")).ok();
        if let (Some(operator), Some(runner), Some(agent), Some(reviewer), Some(gateway)) = (
            var("OPERATOR"),
            var("RUNNER"),
            var("AGENT"),
            var("REVIEWER"),
            var("GATEWAY"),
        ) {
            return Ok(Self {
                operator,
                runner,
                agent,
                reviewer,
                gateway,
            });
        }
        let root = repo_root();
        let run = |cmd: &mut std::process::Command| -> Result<String, String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{cmd:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let refs = run(std::process::Command::new(root.join("images/build")).arg("--print-refs"))?;
        let socket = run(
            std::process::Command::new(root.join("e2e/cluster/hermes-cluster")).args([
                "--tier",
                "b",
                "containerd-address",
            ]),
        )?;
        run(std::process::Command::new(root.join("images/import"))
            .args(["--address", socket.trim()]))?;
        let get = |name: &str| {
            refs.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
                .ok_or_else(|| format!("images/build printed no {name} image"))
        };
        Ok(Self {
            operator: get("operator")?,
            runner: get("runner")?,
            agent: get("agent")?,
            reviewer: get("reviewer")?,
            gateway: get("gateway")?,
        })
    }
}

/// The processes the pods talk to, started once per test process.
pub struct Services {
    /// The node address they listen on.
    pub node_ip: IpAddr,
    /// The git remote.
    pub git: GitServer,
    /// The scripted model server.
    pub model: Server,
    /// A listener on the node that no profile allows: it answers any request
    /// with `200 decoy`, so reaching it is visible.
    pub decoy: SocketAddr,
    /// A stand-in package registry at [`REGISTRY_IP`] (answers `200 decoy`):
    /// an address outside every range the gateway's proxy denies, reached
    /// by name through the proxy only.
    pub registry: SocketAddr,
    /// The git remote as `https://` [`GIT_HOST`], at [`REGISTRY_IP`]: what
    /// the git phases reach through the gateway's proxy.
    pub git_tls: hermes_git_server::tls::TlsFront,
    /// A listener at [`LINK_LOCAL_IP`] (answers `200 decoy`): a node agent
    /// on a link-local address, as clouds and node-local DNS caches have.
    pub link_local: SocketAddr,
    _dir: PathBuf,
}

/// The TLS front's name in the cluster DNS ([`REGISTRY_IP`]).
pub const GIT_HOST: &str = "git.hermes.test";

/// The stand-in registry's address, which Tier B's node puts on its
/// loopback interface: 198.18.0.0/15 (benchmarking) is neither private, nor
/// the cluster's, nor the node's listed address, so the proxy may connect
/// to it. The cluster DNS names it `registry.hermes.test` (and
/// `unlisted.hermes.test`, a name no profile lists).
pub const REGISTRY_IP: &str = "198.18.0.10";

/// A link-local address Tier B's node puts on its loopback interface (as
/// [`REGISTRY_IP`]): what a wide CIDR rule must not reach.
pub const LINK_LOCAL_IP: &str = "169.254.77.77";

/// The scripted model server's name in the cluster DNS (the node's address):
/// what the gateway's profiles name as their upstream.
pub const MODEL_HOST: &str = "model.hermes.test";

// The cluster DNS also answers `metadata.hermes.test` (169.254.169.254),
// `api.hermes.test` (the API server's Service address), `node.hermes.test`
// (the node) and `loop.hermes.test` (127.0.0.1): names pointed at addresses
// the proxy must refuse however a profile lists them (docs/test-clusters.md).

/// The built-in scenarios plus `extra` (name, YAML).
fn scenarios(extra: &[(String, String)]) -> Result<Scenarios, String> {
    let mut all = Scenarios::builtin().map_err(|e| format!("built-in scenarios: {e}"))?;
    for (name, text) in extra {
        let s = hermes_model_server::scenario::parse(name, text)
            .map_err(|e| format!("scenario {name}: {e}"))?;
        all.insert(name, s);
    }
    Ok(all)
}

fn serve_decoy(listener: TcpListener) {
    for mut conn in listener.incoming().flatten() {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf);
        let _ = conn
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\ndecoy\n");
    }
}

/// The API server's address as pods see it behind the `kubernetes` Service.
pub const API_SERVICE: &str = "10.96.0.1:443";
/// Tier B's API server port on the node.
pub const API_NODE_PORT: u16 = 26443;

/// The probe the egress test's implementer runs with its Bash tool: one line
/// per target, `<label> reachable <code>` or `<label> unreachable <curl exit>`,
/// then what the pod itself looks like from inside.
pub fn probe_script(ip: IpAddr, decoy: u16) -> String {
    // The passwords are split so that the command itself (which the CLI
    // keeps in its transcript) never contains them whole.
    let (r1, r2) = READ_USER.1.split_at(4);
    let (p1, p2) = PUSH_USER.1.split_at(4);
    format!(
        r#"probe() {{
  code=$(curl --noproxy '*' -k -sS -m 4 -o /dev/null -w '%{{http_code}}' "$2" 2>/dev/null); rc=$?
  if [ $rc = 0 ]; then echo "probe $1 reachable $code"; else echo "probe $1 unreachable $rc"; fi
}}
probe allowed "${{ANTHROPIC_BASE_URL%%/s/*}}/"
probe node-other http://{ip}:{decoy}/
probe api-service https://{API_SERVICE}/version
probe api-node https://{ip}:{API_NODE_PORT}/version
probe metadata http://169.254.169.254/latest/meta-data/
echo "uid $(id -u)"
if [ -e /var/run/secrets/kubernetes.io/serviceaccount/token ]; then echo "sa-token present"; else echo "sa-token absent"; fi
if touch /hermes-probe 2>/dev/null; then echo "rootfs writable"; else echo "rootfs read-only"; fi
r="{r1}""{r2}"; p="{p1}""{p2}"
found=$(grep -rIls --exclude-dir=proc --exclude-dir=sys -e "$r" -e "$p" / 2>/dev/null | head -n 5)
envs=$(cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -c -e "$r" -e "$p")
echo "git-credentials files [${{found}}] env $envs"
"#
    )
}

/// The egress-probe implementer scenario for a node address and the decoy's port.
fn probe_scenario(ip: IpAddr, decoy: u16) -> String {
    bash_then_edit_scenario(
        "implementer probes egress and its own pod, then writes a note in scope",
        &probe_script(ip, decoy),
        "Probe the network and the pod",
        "{input_tokens: 800, output_tokens: 60}",
    )
}

/// The probe an implementer behind the gateway runs with its Bash tool, one
/// line per attempt (`probe <label> reachable <code>` / `unreachable <rc>`):
/// through the proxy to a listed name (plain HTTP forwarding and CONNECT),
/// to a name not listed, to listed names that resolve to denied addresses,
/// a TLS hello whose SNI is not the CONNECT host, a direct connection that
/// skips the proxy, and a name resolved in the pod itself.
pub fn gateway_probe_script(ip: IpAddr, port: u16) -> String {
    format!(
        r#"probe() {{
  label=$1; shift
  code=$(curl -sS -m 6 -o /dev/null -w '%{{http_code}}' "$@" 2>/dev/null); rc=$?
  if [ $rc = 0 ] && [ "$code" = 200 ]; then echo "probe $label reachable $code"; else echo "probe $label unreachable $rc/$code"; fi
}}
probe forward http://registry.hermes.test:{port}/
probe connect -p http://registry.hermes.test:{port}/
probe unlisted http://unlisted.hermes.test:{port}/
probe metadata-name -p http://metadata.hermes.test:{port}/
probe api-name -p http://api.hermes.test:{port}/
probe node-name -p http://node.hermes.test:{port}/
probe loopback-name -p http://loop.hermes.test:{port}/
probe sni-mismatch -k --connect-to evil.example:{port}:registry.hermes.test:{port} https://evil.example:{port}/
probe direct --noproxy '*' http://{REGISTRY_IP}:{port}/
probe direct-node --noproxy '*' http://{ip}:{port}/
if getent hosts registry.hermes.test >/dev/null 2>&1 || getent hosts kubernetes.default.svc.cluster.local >/dev/null 2>&1 || getent hosts example.com >/dev/null 2>&1; then echo "dns resolves"; else echo "dns fails"; fi
k="{k1}""{k2}"
found=$(grep -rIls --exclude-dir=proc --exclude-dir=sys -e "$k" / 2>/dev/null | head -n 5)
envs=$(cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -c -e "$k")
echo "model-key files [${{found}}] env $envs"
"#,
        k1 = &SCRIPTED_MODEL_KEY[..4],
        k2 = &SCRIPTED_MODEL_KEY[4..],
    )
}

fn gateway_probe_scenario(ip: IpAddr, port: u16) -> String {
    bash_then_edit_scenario(
        "implementer behind the gateway probes egress by name, then edits in scope",
        &gateway_probe_script(ip, port),
        "Probe egress through the gateway",
        "{input_tokens: 800, output_tokens: 60}",
    )
}

/// The name of the scenario [`gateway_probe_scenario`] registers.
pub const GATEWAY_PROBE_SCENARIO: &str = "implementer-gateway-probe-tier-b";

/// An implementer whose first turn's Bash tool waits long enough for the
/// test to restart the gateway before its next request, then makes
/// implementer-happy's edit. Usage: 4 turns, input 1200, output 110.
pub const GATEWAY_RESTART_SCENARIO: &str = "implementer-gateway-restart-tier-b";

fn gateway_restart_scenario() -> String {
    bash_then_edit_scenario(
        "implementer waits while the gateway restarts, then punctuates the greeting",
        "sleep 25; echo waited",
        "Wait while the gateway restarts",
        "{input_tokens: 900, output_tokens: 50}",
    )
}

/// An implementer whose first turn runs `command` with its Bash tool
/// (`what` says why; `usage` is that turn's, as YAML), then reads
/// src/greet.sh and makes implementer-happy's edit (three more turns of
/// input 100, output 20 each).
fn bash_then_edit_scenario(description: &str, command: &str, what: &str, usage: &str) -> String {
    let command = serde_json::to_string(command).unwrap_or_default();
    format!(
        r#"description: {description}
turns:
  - content:
      - type: tool_use
        name: Bash
        input:
          command: {command}
          description: {what}
          timeout: 120000
    usage: {usage}
  - content:
      - type: tool_use
        name: Read
        input:
          file_path: "{{{{cwd}}}}/src/greet.sh"
    usage: {{input_tokens: 100, output_tokens: 20}}
  - content:
      - type: tool_use
        name: Edit
        input:
          file_path: "{{{{cwd}}}}/src/greet.sh"
          old_string: 'echo "Hello $name"'
          new_string: 'echo "Hello, $name!"'
    usage: {{input_tokens: 100, output_tokens: 20}}
  - content:
      - type: text
        text: Done.
    stop_reason: end_turn
    usage: {{input_tokens: 100, output_tokens: 20}}
"#
    )
}

/// The probe an implementer under a profile rule open to every address
/// (`0.0.0.0/0`, [`ProfileOptions::wide_egress`]) runs with its Bash tool:
/// an outside address answers; the node, the API server (by its Service
/// and on the node) and a link-local listener do not.
pub fn wide_probe_script(ip: IpAddr, decoy: u16, outside: u16, link_local: u16) -> String {
    format!(
        r#"probe() {{
  code=$(curl --noproxy '*' -k -sS -m 4 -o /dev/null -w '%{{http_code}}' "$2" 2>/dev/null); rc=$?
  if [ $rc = 0 ]; then echo "probe $1 reachable $code"; else echo "probe $1 unreachable $rc"; fi
}}
probe outside http://{REGISTRY_IP}:{outside}/
probe node http://{ip}:{decoy}/
probe api-service https://{API_SERVICE}/version
probe api-node https://{ip}:{API_NODE_PORT}/version
probe link-local http://{LINK_LOCAL_IP}:{link_local}/
"#
    )
}

fn wide_probe_scenario(ip: IpAddr, decoy: u16, outside: u16, link_local: u16) -> String {
    bash_then_edit_scenario(
        "implementer under a rule open to every address probes what it must not reach",
        &wide_probe_script(ip, decoy, outside, link_local),
        "Probe the cluster's addresses",
        "{input_tokens: 800, output_tokens: 60}",
    )
}

/// A credential of a known format (made up, not any test's Secret) that
/// [`PLANTED_KEY_SCENARIO`]'s agent plants in file names and contents.
pub const PLANTED_KEY: &str = "sk-ant-api03-Pl4nt3dK3yZq3vXw9Lm2Kp7Rt4Ys1Hu6Jb8Nc0Df5";

/// An implementer that plants [`PLANTED_KEY`] where status could copy it
/// from (an in-scope file's name, an out-of-scope file's name) and in a
/// file's content, then makes implementer-happy's edit.
pub const PLANTED_KEY_SCENARIO: &str = "implementer-planted-key-tier-b";

fn planted_key_scenario() -> String {
    bash_then_edit_scenario(
        "implementer plants a key in file names and contents, then punctuates the greeting",
        &format!(
            "mkdir -p docs && echo x > 'src/{PLANTED_KEY}.txt' && echo 'api_token = \"{PLANTED_KEY}\"' > src/leak.env && echo x > 'docs/{PLANTED_KEY}.md'"
        ),
        "Plant a key",
        "{input_tokens: 100, output_tokens: 20}",
    )
}

/// The name of the scenario [`wide_probe_scenario`] registers.
pub const WIDE_PROBE_SCENARIO: &str = "implementer-wide-probe-tier-b";

/// The name of the scenario [`probe_scenario`] registers.
pub const PROBE_SCENARIO: &str = "implementer-probe-tier-b";
/// An implementer that reports the kernel it runs on (`kernel <uname -r>`),
/// then makes implementer-happy's edit: gVisor's kernel names itself.
pub const KERNEL_SCENARIO: &str = "implementer-kernel-tier-b";

fn kernel_scenario() -> String {
    bash_then_edit_scenario(
        "implementer reports its kernel, then punctuates the greeting",
        r#"echo "kernel $(uname -r)""#,
        "Which kernel runs this",
        "{input_tokens: 100, output_tokens: 20}",
    )
}

/// An implementer whose Bash tool allocates (and touches) memory until the
/// kernel kills it at the agent container's limit, then makes
/// implementer-happy's edit: the CLI goes on, the phase must not.
pub const MEMORY_SCENARIO: &str = "implementer-memory-blowup-tier-b";

fn memory_scenario() -> String {
    bash_then_edit_scenario(
        "implementer allocates memory without end, then punctuates the greeting",
        // `tail` keeps the last lines, and /dev/zero has no line end.
        r#"head -c 3G /dev/zero | tail > /dev/null; echo "memory hog ended $?""#,
        "Allocate memory",
        "{input_tokens: 100, output_tokens: 20}",
    )
}

/// An implementer whose Bash tool writes past the agent's `/tmp` emptyDir
/// (1Gi) and waits there, for the kubelet to evict the pod: it measures
/// volumes once a minute (`volumeStatsAggPeriod`) and judges evictions every
/// 10 s, so the wait is long (and under the Bash tool's 120 s).
pub const DISK_FILL_SCENARIO: &str = "implementer-disk-fill-tier-b";

fn disk_fill_scenario() -> String {
    bash_then_edit_scenario(
        "implementer fills its scratch space, then punctuates the greeting",
        "dd if=/dev/zero of=/tmp/fill bs=1M count=1100 2>&1 | tail -n 1; sleep 110; echo still here",
        "Fill the scratch space",
        "{input_tokens: 100, output_tokens: 20}",
    )
}

/// An implementer whose Bash tool makes implementer-happy's edit, then
/// fills the repo volume (beside the checkout, so nothing of it is in the
/// change) until the filesystem says it is full: one large file, then one
/// block at a time for the crumbs ext4 keeps back from a large write. Its
/// Edit turn then finds the edit made.
pub const VOLUME_FILL_SCENARIO: &str = "implementer-volume-fill-tier-b";

fn volume_fill_scenario() -> String {
    bash_then_edit_scenario(
        "implementer punctuates the greeting, then fills the repo volume",
        r#"sed -i 's/echo "Hello $name"/echo "Hello, $name!"/' src/greet.sh
dd if=/dev/zero of=/workspace/fill bs=1M count=200 2>&1 | tail -n 1
i=0; while [ $i -lt 20000 ] && printf x > /workspace/crumb$i 2>/dev/null; do i=$((i+1)); done
echo "crumbs $i"; df -k /workspace | tail -n 1"#,
        "Fill the repo volume",
        "{input_tokens: 100, output_tokens: 20}",
    )
}

/// An implementer whose Bash tool starts a fork bomb and leaves it running
/// (it detaches from the tool's shell, so the tool's own timeout cannot
/// reap it), then makes implementer-happy's edit if it still can.
pub const FORK_BOMB_SCENARIO: &str = "implementer-fork-bomb-tier-b";

fn fork_bomb_scenario() -> String {
    bash_then_edit_scenario(
        "implementer starts a fork bomb, then tries to punctuate the greeting",
        "setsid bash -c 'b() { b | b & }; b' >/dev/null 2>&1 < /dev/null & sleep 5; echo bombed",
        "Start a fork bomb",
        "{input_tokens: 100, output_tokens: 20}",
    )
}

impl Services {
    fn start(node_ip: IpAddr) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("hermes-tier-b-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let git = GitServer::start_with(
            hermes_git_server::Config::new(dir.join("remotes"), format!("{node_ip}:0"))
                .advertised_host(node_ip.to_string()),
        )
        .map_err(|e| format!("starting the git remote: {e}"))?;
        let decoy_listener =
            TcpListener::bind((node_ip, 0)).map_err(|e| format!("binding the decoy: {e}"))?;
        let decoy = decoy_listener
            .local_addr()
            .map_err(|e| format!("decoy address: {e}"))?;
        std::thread::spawn(move || serve_decoy(decoy_listener));
        let registry_listener = TcpListener::bind((REGISTRY_IP, 0)).map_err(|e| {
            format!("binding the stand-in registry at {REGISTRY_IP} (Tier B's node adds it to lo: is the cluster up?): {e}")
        })?;
        let registry = registry_listener
            .local_addr()
            .map_err(|e| format!("registry address: {e}"))?;
        std::thread::spawn(move || serve_decoy(registry_listener));
        let link_local_listener = TcpListener::bind((LINK_LOCAL_IP, 0)).map_err(|e| {
            format!("binding the link-local listener at {LINK_LOCAL_IP} (Tier B's node adds it to lo: is the cluster up?): {e}")
        })?;
        let link_local = link_local_listener
            .local_addr()
            .map_err(|e| format!("link-local address: {e}"))?;
        std::thread::spawn(move || serve_decoy(link_local_listener));
        let git_tls = hermes_git_server::tls::TlsFront::start(
            SocketAddr::new(
                REGISTRY_IP
                    .parse()
                    .map_err(|e| format!("{REGISTRY_IP}: {e}"))?,
                0,
            ),
            git.addr(),
            GIT_HOST,
            &dir,
        )?;
        let extra = [
            (
                GATEWAY_PROBE_SCENARIO.to_owned(),
                gateway_probe_scenario(node_ip, registry.port()),
            ),
            (
                PROBE_SCENARIO.to_owned(),
                probe_scenario(node_ip, decoy.port()),
            ),
            (KERNEL_SCENARIO.to_owned(), kernel_scenario()),
            (PLANTED_KEY_SCENARIO.to_owned(), planted_key_scenario()),
            (
                WIDE_PROBE_SCENARIO.to_owned(),
                wide_probe_scenario(node_ip, decoy.port(), registry.port(), link_local.port()),
            ),
            (
                GATEWAY_RESTART_SCENARIO.to_owned(),
                gateway_restart_scenario(),
            ),
            (MEMORY_SCENARIO.to_owned(), memory_scenario()),
            (DISK_FILL_SCENARIO.to_owned(), disk_fill_scenario()),
            (FORK_BOMB_SCENARIO.to_owned(), fork_bomb_scenario()),
            (VOLUME_FILL_SCENARIO.to_owned(), volume_fill_scenario()),
        ];
        let model = Server::start(hermes_model_server::Config {
            listen: format!("{node_ip}:0"),
            ..hermes_model_server::Config::loopback(scenarios(&extra)?)
        })
        .map_err(|e| format!("starting the model server: {e}"))?;
        Ok(Self {
            node_ip,
            git,
            model,
            decoy,
            registry,
            git_tls,
            link_local,
            _dir: dir,
        })
    }

    /// The model base URL of `scenario`, by the node's address.
    pub fn model_url(&self, scenario: &str) -> String {
        self.model.base_url(scenario)
    }

    /// The model base URL of `scenario` by the server's name in the cluster
    /// DNS ([`MODEL_HOST`]), as the gateway's profiles name it.
    pub fn model_url_by_name(&self, scenario: &str) -> String {
        self.model_url(scenario)
            .replacen(&self.node_ip.to_string(), MODEL_HOST, 1)
    }

    /// The model server's requests so far.
    pub fn model_records(&self) -> Vec<Record> {
        self.model.records()
    }
}

/// A connection to Tier B with the operator deployed and the services up.
pub struct TierB {
    /// The cluster.
    pub cluster: Cluster,
    /// The images under test.
    pub images: Images,
    /// The git remote, model server and decoy.
    pub services: &'static Services,
}

static IMAGES: OnceLock<Result<Images, String>> = OnceLock::new();
static SERVICES: OnceLock<Result<Services, String>> = OnceLock::new();
static DEPLOYED: OnceLock<Result<(), String>> = OnceLock::new();

impl TierB {
    /// Connects to Tier B, deploys the operator (once per process) and starts
    /// the services. `None` when there is no Tier B and it is not required.
    pub async fn connect() -> Option<Self> {
        let cluster = Cluster::connect_tier(Tier::B).await?;
        let ready = async {
            let images = IMAGES.get_or_init(Images::resolve).clone()?;
            let node_ip = node_ip(&cluster).await?;
            let services = SERVICES
                .get_or_init(|| Services::start(node_ip))
                .as_ref()
                .map_err(Clone::clone)?;
            let deployed = DEPLOYED.get_or_init(|| deploy_operator(&cluster, &images, node_ip));
            deployed.clone()?;
            Ok::<_, String>((images, services))
        };
        match ready.await {
            Ok((images, services)) => Some(Self {
                cluster,
                images,
                services,
            }),
            Err(why) if !crate::cluster_required() => {
                eprintln!("skipped: Tier B is up but not usable: {why}");
                None
            }
            Err(why) => panic!("HERMES_E2E=require but Tier B is not usable: {why}"),
        }
    }

    /// A namespace for one test, Pod Security `restricted` enforced, holding
    /// the three credential Secrets and a profile named `default`.
    pub async fn fixture(&self, prefix: &str, profile: ProfileOptions) -> Result<Fixture, Error> {
        let ns = self
            .cluster
            .namespace_labelled(
                prefix,
                &[("pod-security.kubernetes.io/enforce", "restricted")],
            )
            .await?;
        let s = self.services;
        let secrets: Api<Secret> = Api::namespaced(self.cluster.client.clone(), &ns.name);
        let model = |scenario: &str| json!({"ANTHROPIC_API_KEY": SCRIPTED_MODEL_KEY, "ANTHROPIC_BASE_URL": s.model_url(scenario)});
        for (name, data) in [
            ("model-implementer", model(&profile.implementer)),
            ("model-reviewer", model(&profile.reviewer)),
            (
                "git-read",
                json!({"username": READ_USER.0, "password": READ_USER.1}),
            ),
            (
                "git-push",
                json!({"username": PUSH_USER.0, "password": PUSH_USER.1}),
            ),
        ] {
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": name},
                "stringData": data,
            }))
            .map_err(|e| Error::Timeout(format!("secret {name}: {e}")))?;
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .map_err(|source| Error::Api {
                    what: format!("creating secret {name}"),
                    source,
                })?;
        }
        let ip = s.node_ip;
        let git_port = s.git.port();
        let model_port = s.model.addr().port();
        let allow = |port: u16| json!([{"cidr": format!("{ip}/32"), "ports": [{"port": port}]}]);
        let small = json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}});
        let mut spec = json!({
            "agent": {
                "image": self.images.agent,
                "command": ["claude", "-p", "--output-format", "json", "--model", "claude-sonnet-4-5",
                            "--permission-mode", "acceptEdits", "--allowedTools", "Bash,Read,Edit,Write"],
                "resources": small,
            },
            "reviewer": {
                "image": self.images.reviewer,
                "command": ["claude", "-p", "--output-format", "json", "--model", "claude-sonnet-4-5",
                            "--allowedTools", "Read"],
                "resources": small,
            },
            "runner": {"image": self.images.runner, "resources": small},
            "imagePullPolicy": "Never",
            "egress": {
                "prepare": allow(git_port),
                "implement": allow(model_port),
                "review": allow(model_port),
                "publish": allow(git_port),
            },
            "secrets": {
                "model": "model-implementer",
                "reviewerModel": "model-reviewer",
                "gitRead": "git-read",
                "gitPush": "git-push",
            },
            "timeouts": {
                "prepare": {"default": "3m", "max": "10m"},
                "implement": {"default": "5m", "max": "10m"},
                "review": {"default": "5m", "max": "10m"},
                "publish": {"default": "3m", "max": "10m"},
            },
        });
        if let Some(rc) = &profile.runtime_class {
            spec["runtimeClassName"] = json!(rc);
        }
        if profile.wide_egress {
            let ports: Vec<serde_json::Value> = [
                443,
                API_NODE_PORT,
                s.decoy.port(),
                s.registry.port(),
                s.link_local.port(),
            ]
            .iter()
            .map(|p| json!({"port": p}))
            .collect();
            if let Some(rules) = spec["egress"]["implement"].as_array_mut() {
                rules.push(json!({"cidr": "0.0.0.0/0", "ports": ports}));
            }
        }
        if let Some(budget) = &profile.budget {
            spec["budget"] = budget.clone();
        }
        if let Some(size) = profile.volume_size {
            spec["volume"] = json!({"size": size});
        }
        if profile.gateway {
            // No key in any task pod: the gateway holds it and forwards to
            // the scripted server; the pods may reach the gateway only.
            let upstream = |scenario: &str| json!({"url": s.model_url_by_name(scenario), "credential": "scripted"});
            spec["model"] = json!({
                "agent": upstream(&profile.implementer),
                "reviewer": upstream(&profile.reviewer),
                "prices": [{"model": "claude-sonnet-4-5*", "input": "3", "output": "15",
                            "cacheRead": "0.3", "cacheWrite": "3.75"}],
            });
            spec["secrets"] = json!({"gitRead": "git-read", "gitPush": "git-push"});
            spec["egress"] = json!({"prepare": allow(git_port), "publish": allow(git_port)});
            if let Some(hosts) = &profile.hosts {
                spec["egress"]["hosts"] = hosts.clone();
            }
            if profile.git_by_name {
                // No CIDR rule: the proxy is the only way to the front.
                let git = json!([{"name": GIT_HOST, "ports": [s.git_tls.port()]}]);
                let mut hosts = profile.hosts.clone().unwrap_or_else(|| json!({}));
                hosts["prepare"] = git.clone();
                hosts["publish"] = git;
                spec["egress"] = json!({"hosts": hosts});
                let ca: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": "git-ca"},
                    "data": {"ca.crt": s.git_tls.cert_pem},
                }))
                .map_err(|e| Error::Timeout(format!("configmap git-ca: {e}")))?;
                Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
                    self.cluster.client.clone(),
                    &ns.name,
                )
                .create(&PostParams::default(), &ca)
                .await
                .map_err(|source| Error::Api {
                    what: "creating configmap git-ca".into(),
                    source,
                })?;
                spec["git"] = json!({"caBundle": "git-ca"});
            }
        }
        let api: Api<hermes_crds::profile::HermesProfile> =
            Api::namespaced(self.cluster.client.clone(), &ns.name);
        api.patch(
            "default",
            &PatchParams::apply(TEST_FIELD_MANAGER),
            &Patch::Apply(json!({
                "apiVersion": "hermes.dev/v1alpha1",
                "kind": "HermesProfile",
                "metadata": {"name": "default"},
                "spec": spec,
            })),
        )
        .await
        .map_err(|source| Error::Api {
            what: "applying the profile".into(),
            source,
        })?;
        Ok(Fixture {
            ns,
            cluster: self.cluster.clone(),
        })
    }

    /// Adds a commit to the remote repository `name`'s main holding a file
    /// of `bytes` pseudo-random bytes (they do not compress: the clone
    /// carries all of them).
    pub fn grow_repo(&self, name: &str, bytes: usize) -> Result<(), String> {
        let bare = self.services.git.root().join(name);
        let work = tempdir_in(self.services.git.root(), &format!("{name}-grow"))?;
        let bare_path = bare.to_string_lossy().into_owned();
        let git = |args: &[&str]| fixture::try_git(&work, args).map_err(|e| e.to_string());
        git(&["clone", "-q", &bare_path, "."])?;
        // xorshift64*: fast, and no compressor finds a pattern in it.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut data = Vec::with_capacity(bytes + 8);
        while data.len() < bytes {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            data.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        data.truncate(bytes);
        let file = work.join("data.bin");
        std::fs::write(&file, &data).map_err(|e| format!("{}: {e}", file.display()))?;
        git(&["add", "data.bin"])?;
        git(&[
            "-c",
            "user.name=Seed",
            "-c",
            "user.email=seed@example.com",
            "commit",
            "-q",
            "-m",
            "a large file",
        ])?;
        git(&["push", "-q", &bare_path, "main"])?;
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    }

    /// A new bare repository on the git remote, seeded with the fixture
    /// `e2e/scenarios/fixtures/<fixture>` on `main`; returns its in-cluster URL.
    pub fn seed_repo(&self, name: &str, fixture_name: &str) -> Result<String, String> {
        let git = &self.services.git;
        let bare = git.root().join(name);
        fixture::init_bare(&bare).map_err(|e| e.to_string())?;
        let work = tempdir_in(git.root(), &format!("{name}-seed"))?;
        copy_dir(
            &repo_root()
                .join("e2e/scenarios/fixtures")
                .join(fixture_name),
            &work,
        )?;
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "-A"],
            &[
                "-c",
                "user.name=Seed",
                "-c",
                "user.email=seed@example.com",
                "commit",
                "-q",
                "-m",
                "seed",
            ],
        ] {
            fixture::try_git(&work, args).map_err(|e| e.to_string())?;
        }
        let path = bare.to_string_lossy().into_owned();
        fixture::try_git(&work, &["push", "-q", &path, "main"]).map_err(|e| e.to_string())?;
        Ok(git.url(name))
    }

    /// The in-cluster `https://` URL of the remote's repository `name`,
    /// through the TLS front by [`GIT_HOST`].
    pub fn https_url(&self, name: &str) -> String {
        format!("https://{GIT_HOST}:{}/{name}", self.services.git_tls.port())
    }

    /// `git rev-parse <rev>` in the remote's bare repository `name`.
    pub fn remote_rev(&self, name: &str, rev: &str) -> Option<String> {
        fixture::try_git(
            &self.services.git.root().join(name),
            &["rev-parse", "--verify", "-q", rev],
        )
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
    }

    /// `git <args>` in the remote's bare repository `name`.
    pub fn remote_git(&self, name: &str, args: &[&str]) -> Result<String, String> {
        fixture::try_git(&self.services.git.root().join(name), args).map_err(|e| e.to_string())
    }
}

/// What a test's profile differs in.
#[derive(Clone, Debug)]
pub struct ProfileOptions {
    /// The implementer's scenario.
    pub implementer: String,
    /// The reviewer's scenario.
    pub reviewer: String,
    /// A RuntimeClass for every task pod.
    pub runtime_class: Option<String>,
    /// Route the agent's and the reviewer's model requests through the
    /// Hermes gateway (`spec.model`) instead of handing them the key.
    pub gateway: bool,
    /// The profile's `budget` (default and max), if any.
    pub budget: Option<serde_json::Value>,
    /// The profile's `egress.hosts` (with the gateway), if any.
    pub hosts: Option<serde_json::Value>,
    /// With the gateway: prepare and publish reach the git remote as
    /// `https://` [`GIT_HOST`] through the proxy alone (their hosts list it,
    /// no CIDR rule), trusting the front by the profile's `git.caBundle`.
    pub git_by_name: bool,
    /// Implement may also reach every address (`0.0.0.0/0`) on the ports
    /// of every listener the tests run (and 443): what the operator's
    /// excepts must keep from the node, the API server and link-local.
    pub wide_egress: bool,
    /// The repo volume's size (`volume.size`), if not the default.
    pub volume_size: Option<&'static str>,
}

impl ProfileOptions {
    /// The given scenarios, default runtime.
    pub fn scenarios(implementer: &str, reviewer: &str) -> Self {
        Self {
            implementer: implementer.into(),
            reviewer: reviewer.into(),
            runtime_class: None,
            gateway: false,
            budget: None,
            hosts: None,
            git_by_name: false,
            wide_egress: false,
            volume_size: None,
        }
    }

    /// The given scenarios, through the gateway.
    pub fn through_gateway(implementer: &str, reviewer: &str) -> Self {
        Self {
            gateway: true,
            ..Self::scenarios(implementer, reviewer)
        }
    }
}

/// One test's namespace, credentials and profile.
pub struct Fixture {
    /// The namespace (deleted on drop).
    pub ns: TestNamespace,
    cluster: Cluster,
}

impl Fixture {
    /// Applies a task.
    pub async fn apply_task(&self, task: serde_json::Value) -> Result<(), Error> {
        let name = task["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.tasks()
            .patch(
                &name,
                &PatchParams::apply(TEST_FIELD_MANAGER),
                &Patch::Apply(task),
            )
            .await
            .map(|_| ())
            .map_err(|source| Error::Api {
                what: format!("applying task {name}"),
                source,
            })
    }

    /// The tasks API of the namespace.
    pub fn tasks(&self) -> Api<HermesTask> {
        Api::namespaced(self.cluster.client.clone(), &self.ns.name)
    }

    /// Waits until `done` holds for the task (polling), returning it; on
    /// timeout, an error with the last status seen.
    pub async fn wait_task(
        &self,
        name: &str,
        timeout: Duration,
        mut done: impl FnMut(&HermesTask) -> bool,
    ) -> Result<HermesTask, Error> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(t) = self.tasks().get(name).await {
                if done(&t) {
                    return Ok(t);
                }
                last = Some(t);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let status = last
            .and_then(|t| serde_json::to_string_pretty(&t.status).ok())
            .unwrap_or_default();
        let pods = self
            .cluster
            .kubectl(["get", "pods,jobs", "-n", &self.ns.name, "-o", "wide"]);
        Err(Error::Timeout(format!(
            "task {name} in {ns}: condition not met in {timeout:?}; status: {status}\n{pods}",
            ns = self.ns.name,
            pods = String::from_utf8_lossy(&pods.stdout),
        )))
    }

    /// Waits for the task's phase to be one of `phases`.
    pub async fn wait_phase(
        &self,
        name: &str,
        phases: &[&str],
        timeout: Duration,
    ) -> Result<HermesTask, Error> {
        self.wait_task(name, timeout, |t| {
            t.status
                .as_ref()
                .and_then(|s| s.phase)
                .and_then(|p| serde_json::to_value(p).ok())
                .is_some_and(|p| phases.iter().any(|want| p == *want))
        })
        .await
    }

    /// kubectl in the namespace; its standard output.
    pub fn ns_kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.ns.name.as_str()];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&self.cluster.kubectl(all).stdout).into_owned()
    }

    /// Container logs of every pod of the namespace, for failure messages.
    pub fn pod_logs(&self) -> String {
        let out = self.cluster.kubectl([
            "logs",
            "-n",
            &self.ns.name,
            "--all-containers",
            "--prefix",
            "-l",
            "app.kubernetes.io/managed-by=hermes-operator",
            "--tail",
            "40",
        ]);
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        // The operator's side: its pods (restarts show a crash) and its log
        // lines that name this namespace.
        let pods = self
            .cluster
            .kubectl(["get", "pods", "-n", GATEWAY_NAMESPACE, "-o", "wide"]);
        text.push_str("\n--- pods of the operator's namespace:\n");
        text.push_str(&String::from_utf8_lossy(&pods.stdout));
        let log = self.cluster.kubectl([
            "logs",
            "-n",
            GATEWAY_NAMESPACE,
            "deployment/hermes-operator",
            "--tail",
            "5000",
        ]);
        let log = String::from_utf8_lossy(&log.stdout);
        let mine: Vec<&str> = log.lines().filter(|l| l.contains(&self.ns.name)).collect();
        text.push_str(&format!(
            "--- the operator's last log lines naming {}:\n",
            self.ns.name
        ));
        for line in &mine[mine.len().saturating_sub(40)..] {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// The node's InternalIP.
async fn node_ip(cluster: &Cluster) -> Result<IpAddr, String> {
    use k8s_openapi::api::core::v1::Node;
    if let Ok(ip) = std::env::var("HERMES_NODE_IP") {
        return ip.parse().map_err(|e| format!("HERMES_NODE_IP={ip}: {e}"));
    }
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let list = nodes
        .list(&Default::default())
        .await
        .map_err(|e| format!("listing nodes: {e}"))?;
    list.items
        .iter()
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .find(|a| a.type_ == "InternalIP")
        .ok_or_else(|| "no node with an InternalIP".to_owned())?
        .address
        .parse()
        .map_err(|e| format!("node address: {e}"))
}

/// Installs the operator with the Helm chart (release `hermes` in
/// `hermes-system`, `images.operator` with pull policy Never, the chart's
/// default values otherwise) after applying the CRDs, and waits for its
/// rollout: `e2e/cluster/install-operator`, as the demo does. Blocking, once
/// per process. The chart tests leave the same release behind, so this is
/// then an upgrade that changes nothing.
fn deploy_operator(cluster: &Cluster, images: &Images, node_ip: IpAddr) -> Result<(), String> {
    // The model key only the gateway holds: a Secret in its namespace,
    // before the install (the gateway's pod mounts it).
    let manifest = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NAMESPACE}},
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "hermes-model-scripted", "namespace": GATEWAY_NAMESPACE},
         "stringData": {"api-key": SCRIPTED_MODEL_KEY}},
    ]});
    let out = cluster.kubectl_stdin(["apply", "--server-side", "-f", "-"], &manifest.to_string());
    if !out.status.success() {
        return Err(format!(
            "creating the gateway's model Secret: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let deny = format!("gateway.denyCidrs={{10.244.0.0/16,10.96.0.0/16,{node_ip}/32}}");
    crate::chart::install_operator_with_gateway(
        cluster,
        &images.operator,
        &images.gateway,
        &[
            "--set",
            "gateway.modelCredentials[0].name=scripted",
            "--set",
            "gateway.modelCredentials[0].secretName=hermes-model-scripted",
            "--set",
            &deny,
        ],
    )
}

/// A plain HTTP/1.1 POST from the test process; the whole answer (status
/// line, headers, body) as text.
pub fn http_post(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<String, String> {
    let mut conn = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    conn.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    conn.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The gateway's model API (`<ClusterIP>:8080`), which the test process
/// reaches through kube-proxy like a pod.
pub fn gateway_model_addr(cluster: &Cluster) -> Result<String, String> {
    let out = cluster.kubectl([
        "get",
        "service",
        "-n",
        GATEWAY_NAMESPACE,
        "hermes-gateway",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let ip = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || ip.is_empty() {
        return Err(format!(
            "the gateway's Service: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(format!("{ip}:8080"))
}

/// The key the chart generated for the operator and the gateway (the test
/// mints credentials with it to show what the gateway refuses).
pub fn gateway_signing_key(cluster: &Cluster) -> Result<hermes_crds::gateway::SigningKey, String> {
    let out = cluster.kubectl([
        "get",
        "secret",
        "-n",
        GATEWAY_NAMESPACE,
        "hermes-gateway-key",
        "-o",
        "jsonpath={.data.key}",
    ]);
    if !out.status.success() {
        return Err(format!(
            "the gateway's signing key: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        String::from_utf8_lossy(&out.stdout).trim(),
    )
    .map_err(|e| format!("the gateway's signing key: {e}"))?;
    hermes_crds::gateway::SigningKey::from_bytes(&bytes)
        .map_err(|e| format!("the gateway's signing key: {e}"))
}

/// One small model request to the gateway with `credential`: the whole
/// answer as text.
pub fn gateway_model_request(addr: &str, credential: &str) -> Result<String, String> {
    http_post(
        addr,
        "/v1/messages",
        &[
            ("x-api-key", credential),
            ("anthropic-version", "2023-06-01"),
        ],
        r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#,
    )
}

/// The namespace the chart installs the operator and the gateway into.
pub const GATEWAY_NAMESPACE: &str = "hermes-system";
/// The key the scripted model server's upstream credential holds (only the
/// gateway mounts it; profiles without the gateway hand it to the agent).
pub const SCRIPTED_MODEL_KEY: &str = "sk-scripted";

fn tempdir_in(root: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = root.join(format!(".{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", from.display()))?;
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(|e| format!("{}: {e}", target.display()))?;
        }
    }
    Ok(())
}

/// The lines `probe <label> ...` and the pod facts of a probe run, from the
/// tool results the model server saw.
pub fn probe_results(records: &[Record], scenario: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.scenario.as_deref() == Some(scenario))
    {
        for text in &r.tool_results {
            for line in text.lines() {
                let mut words = line.splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("probe"), Some(label), Some(rest)) => {
                        out.insert(format!("probe {label}"), rest.to_owned());
                    }
                    (Some(key), Some(a), b) => {
                        let v = match b {
                            Some(b) => format!("{a} {b}"),
                            None => a.to_owned(),
                        };
                        out.insert(key.to_owned(), v);
                    }
                    _ => {}
                }
            }
        }
    }
    out
}
