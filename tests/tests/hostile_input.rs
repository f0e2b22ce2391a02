//! Hostile FluxConfigs through the whole admission path: a real
//! kube-apiserver (its request and depth limits, the CRD schema and CEL
//! rules, Kubernetes' metadata validation, etcd's value limit), then the
//! fluxgate webhook, in-process and registered with the chart's
//! `ValidatingWebhookConfiguration` (`failurePolicy: Fail`, 5 s timeout).
//!
//! - [`cases`]: the table. Each row is one hostile FluxConfig, refused by
//!   the schema (422) or the webhook (403) with a message that names the
//!   object, the field, the value (masked when it is a password, left out
//!   when it is huge) and what is allowed, within the webhook timeout, and
//!   with no webhook error along the way.
//! - [`limits`]: what the API server refuses before any webhook sees it
//!   (3 MiB requests, JSON nesting, unknown fields), and etcd's 1.5 MiB.
//! - `inputs_past_the_webhooks_own_limits_are_judged_on_their_spec`: inputs
//!   past the webhook's own limits (huge objects, deep `managedFields`),
//!   kept as regressions of answers that once fell short.
//!
//! After each part the webhook must still report ready and admit a valid
//! FluxConfig quickly. The rules themselves are unit-tested in
//! `platform-defaults` (`src/rules`, `tests/resolve.rs`); this file proves
//! the path kube-apiserver → webhook → response.
//!
//! Objects are sent as raw JSON with `fieldValidation=Strict` (what
//! `kubectl` sends), so unknown or nested fields are refused rather than
//! silently pruned, and sizes are exact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use fluxgate_crds::PlatformDefaults;
use fluxgate_e2e::stack;
use fluxgate_e2e::testenv::{self, with_temp_ns};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// The label the test puts on its namespace; its PlatformDefaults selects
/// on it, so other tests' rules never apply.
const NS_LABEL: &str = "fluxgate.dev/hostile-e2e";
/// Stands for the test's namespace in the table.
const NS: &str = "$NS";
/// The webhook's name in the chart's configuration, as the API server
/// quotes it.
const FC_WEBHOOK: &str = "fluxconfigs.fluxgate.dev";
/// A password that must never appear in a message.
const PASSWORD: &str = "hunter2";
/// 1.4 MiB: under etcd's 1.5 MiB value limit, over anything a field allows.
const NEAR_LIMIT: usize = 1400 * 1024;
/// The API server's request body limit (3 MiB).
const APISERVER_MAX_BODY: usize = 3 * 1024 * 1024;

/// The shared webhook, started once per test binary after the CRDs are in.
async fn webhook() -> &'static stack::RunningWebhook {
    static WEBHOOK: OnceCell<stack::RunningWebhook> = OnceCell::const_new();
    WEBHOOK
        .get_or_init(|| async {
            let cp = testenv::shared().unwrap();
            let client = cp.client().unwrap();
            testenv::install_crds(&client, fluxgate_crds::all_crds())
                .await
                .unwrap();
            stack::start_webhook(cp).await.unwrap()
        })
        .await
}

/// The chart's webhook timeout: the API server gives up on the webhook
/// after it, and fails closed.
fn webhook_timeout() -> Duration {
    let config = stack::webhook_configuration("timeout", "https://127.0.0.1/", "").unwrap();
    let webhook = config
        .webhooks
        .unwrap()
        .into_iter()
        .find(|w| w.name == FC_WEBHOOK)
        .unwrap();
    Duration::from_secs(webhook.timeout_seconds.unwrap().try_into().unwrap())
}

fn pd_name(ns: &str) -> String {
    format!("hostile-{ns}")
}

/// Labels the namespace, gives it a PlatformDefaults with a normal team
/// allow-list, and waits until the webhook admits a valid FluxConfig there.
async fn set_up(client: &Client, ns: &str) {
    webhook().await;
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {NS_LABEL: ns}}})),
        )
        .await
        .unwrap();
    let pd: PlatformDefaults = serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "PlatformDefaults",
        "metadata": {"name": pd_name(ns)},
        "spec": {
            "namespaceSelector": {"matchLabels": {NS_LABEL: ns}},
            "allowedRepos": [
                "https://git.corp.example/{namespace}/*",
                "ssh://git@git.corp.example/{namespace}/*",
            ],
            "allowedTargetNamespaces": ["{namespace}", "{namespace}-*"],
            "clusters": ["prod-eu"],
        },
    }))
    .unwrap();
    Api::<PlatformDefaults>::all(client.clone())
        .create(&PostParams::default(), &pd)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(err) = create(client, ns, valid("probe", ns), true).await {
        assert!(Instant::now() < deadline, "setup never admitted: {err:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn tear_down(client: &Client, ns: &str) {
    let _ = Api::<PlatformDefaults>::all(client.clone())
        .delete(&pd_name(ns), &DeleteParams::default())
        .await;
}

/// A FluxConfig the platform allows.
fn valid(name: &str, ns: &str) -> Vec<u8> {
    object(
        name,
        json!({}),
        json!({"repo": format!("https://git.corp.example/{ns}/{name}.git")}),
    )
}

/// The JSON of a FluxConfig named `name` with extra `metadata` and `spec`.
fn object(name: &str, metadata: Value, spec: Value) -> Vec<u8> {
    let mut meta = json!({"name": name});
    if let (Some(meta), Value::Object(extra)) = (meta.as_object_mut(), metadata) {
        meta.extend(extra);
    }
    serde_json::to_vec(&json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "metadata": meta,
        "spec": spec,
    }))
    .unwrap()
}

/// A refusal as the client sees it.
#[derive(Debug)]
struct Refusal {
    code: u16,
    message: String,
}

/// POSTs `body` as a FluxConfig in `ns` with strict field validation.
async fn create(client: &Client, ns: &str, body: Vec<u8>, dry_run: bool) -> Result<(), Refusal> {
    let mut uri =
        format!("/apis/fluxgate.dev/v1alpha1/namespaces/{ns}/fluxconfigs?fieldValidation=Strict");
    if dry_run {
        uri.push_str("&dryRun=All");
    }
    let request = http::Request::post(uri)
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    match client.request_text(request).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(Refusal {
            code: status.code,
            message: status.message,
        }),
        Err(other) => panic!("not an API answer: {other}"),
    }
}

/// Who refuses a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    /// The CRD's OpenAPI schema or CEL rules, or the API server's metadata
    /// validation (422, before any webhook).
    Schema,
    /// The fluxgate webhook (403, the core's message).
    Webhook,
}

/// One hostile FluxConfig.
struct Case {
    name: &'static str,
    by: By,
    metadata: Value,
    spec: Value,
    /// The field the message must name.
    field: &'static str,
    /// The value as the message quotes it; empty when the message must not
    /// repeat it (huge values).
    shown: String,
    /// What the message must say is allowed.
    allowed: &'static str,
}

fn case(
    name: &'static str,
    by: By,
    spec: Value,
    field: &'static str,
    shown: &str,
    allowed: &'static str,
) -> Case {
    Case {
        name,
        by,
        metadata: json!({}),
        spec,
        field,
        shown: shown.to_owned(),
        allowed,
    }
}

/// A spec with the team's valid repository and `extra` merged in.
fn with(extra: Value) -> Value {
    let mut spec = json!({"repo": "https://git.corp.example/$NS/web.git"});
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    spec
}

fn repo(url: &str) -> Value {
    json!({ "repo": url })
}

use By::{Schema, Webhook};

/// The table. `$NS` stands for the namespace everywhere.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let huge = "a".repeat(NEAR_LIMIT);
    vec![
        // Huge strings in every string field: the schema's maxLength refuses them without echoing them.
        case("huge-repo", Schema, repo(&format!("https://git.corp.example/$NS/{huge}")), "spec.repo", "", "may not be more than 2048 bytes"),
        case("huge-path", Schema, with(json!({"path": huge})), "spec.path", "", "may not be more than 1024 bytes"),
        case("huge-interval", Schema, with(json!({"interval": huge})), "spec.interval", "", "may not be more than 32 bytes"),
        case("huge-cluster", Schema, with(json!({"cluster": huge})), "spec.cluster", "", "may not be more than 63 bytes"),
        case("huge-target", Schema, with(json!({"targetNamespace": huge})), "spec.targetNamespace", "", "may not be more than 63 bytes"),
        case("huge-branch", Schema, with(json!({"ref": {"branch": huge}})), "spec.ref.branch", "", "may not be more than 255 bytes"),
        case("huge-tag", Schema, with(json!({"ref": {"tag": huge}})), "spec.ref.tag", "", "may not be more than 255 bytes"),
        case("huge-suspend", Schema, with(json!({"suspend": huge})), "spec.suspend", "", "must be of type boolean"),
        Case { metadata: json!({"annotations": {"a": huge}}), ..case("huge-annotation", Schema, with(json!({})), "metadata.annotations", "", "may not be more than 262144 bytes") },
        // Unicode look-alike hosts.
        case("cyrillic-host", Webhook, repo("https://git.corp.exаmple/$NS/web.git"), "spec.repo", r#""https://git.corp.exаmple/$NS/web.git""#, r#"host "git.corp.ex\u{430}mple" is not ASCII: U+0430 'а' at byte 11, which looks like an ASCII character; internationalised host names are not supported, write the name in its punycode (xn--) form"#),
        case("punycode-host", Webhook, repo("https://git.corp.xn--exmple-4nf/$NS/web.git"), "spec.repo", r#""https://git.corp.xn--exmple-4nf/$NS/web.git""#, "allowed: https://git.corp.example/$NS/*"),
        case("fullwidth-dot", Webhook, repo("https://git.corp。example/$NS/web.git"), "spec.repo", r#""https://git.corp。example/$NS/web.git""#, r#"host "git.corp\u{3002}example" is not ASCII: U+3002 '。' at byte 8, which looks like an ASCII character; "#),
        // URL tricks.
        case("userinfo-host", Webhook, repo("https://git.corp.example@evil.example/$NS/web.git"), "spec.repo", r#""https://git.corp.example@evil.example/$NS/web.git""#, "credentials belong in a Secret"),
        case("token-as-user", Webhook, repo("https://ghp_16C7e42F292c6912E7710c838347Ae178B4a@git.corp.example/$NS/web.git"), "spec.repo", r#""https://***@git.corp.example/$NS/web.git""#, "credentials belong in a Secret"),
        case("password", Webhook, repo("https://deploy:hunter2@git.corp.example/$NS/web.git"), "spec.repo", r#""https://deploy:***@git.corp.example/$NS/web.git""#, "write the url without them"),
        case("ssh-password", Webhook, repo("ssh://git:hunter2@git.corp.example/$NS/web.git"), "spec.repo", r#""ssh://git:***@git.corp.example/$NS/web.git""#, "write the url without them"),
        case("suffix-host", Webhook, repo("https://git.corp.example.evil.example/$NS/web.git"), "spec.repo", r#""https://git.corp.example.evil.example/$NS/web.git""#, "allowed: https://git.corp.example/$NS/*"),
        case("encoded-dot-dot", Webhook, repo("https://git.corp.example/$NS/%2e%2e/other/web.git"), "spec.repo", r#""https://git.corp.example/$NS/%2e%2e/other/web.git""#, "write the path without them"),
        case("encoded-slash", Webhook, repo("https://git.corp.example/$NS%2F..%2Fother/web.git"), "spec.repo", r#""https://git.corp.example/$NS%2F..%2Fother/web.git""#, "separate segments with a plain '/'"),
        case("backslash-host", Webhook, repo(r"https://git.corp.example\@evil.example/$NS/web.git"), "spec.repo", r#""https://git.corp.example\\@evil.example/$NS/web.git""#, "backslashes are not allowed"),
        case("backslash-path", Webhook, repo(r"https://git.corp.example/$NS\..\other/web.git"), "spec.repo", r#""https://git.corp.example/$NS\\..\\other/web.git""#, "backslashes are not allowed"),
        case("query", Webhook, repo("https://git.corp.example/$NS/web.git?host=evil.example"), "spec.repo", r#""https://git.corp.example/$NS/web.git?host=evil.example""#, "write only scheme, host and path"),
        case("ipv6-loopback", Webhook, repo("https://[::1]/$NS/web.git"), "spec.repo", r#""https://[::1]/$NS/web.git""#, "only a pattern naming that exact host can allow"),
        case("ipv6-zone", Webhook, repo("https://[fe80::1%25eth0]/$NS/web.git"), "spec.repo", r#""https://[fe80::1%25eth0]/$NS/web.git""#, "in brackets without a zone"),
        case("decimal-ip", Webhook, repo("http://2130706433/$NS/web.git"), "spec.repo", r#""http://2130706433/$NS/web.git""#, "four decimal numbers from 0 to 255"),
        case("octal-ip", Webhook, repo("http://0177.0.0.1/$NS/web.git"), "spec.repo", r#""http://0177.0.0.1/$NS/web.git""#, "four decimal numbers from 0 to 255"),
        case("hex-ip", Webhook, repo("http://0x7f.1/$NS/web.git"), "spec.repo", r#""http://0x7f.1/$NS/web.git""#, "four decimal numbers from 0 to 255"),
        case("metadata-ipv4", Webhook, repo("http://169.254.169.254/latest/meta-data"), "spec.repo", r#""http://169.254.169.254/latest/meta-data""#, "cloud metadata endpoint"),
        case("metadata-ipv6", Webhook, repo("http://[fd00:ec2::254]/latest/meta-data"), "spec.repo", r#""http://[fd00:ec2::254]/latest/meta-data""#, "cloud metadata endpoint"),
        case("metadata-mapped", Webhook, repo("http://[::ffff:169.254.169.254]/latest/meta-data"), "spec.repo", r#""http://[::ffff:169.254.169.254]/latest/meta-data""#, "cloud metadata endpoint"),
        case("metadata-name", Webhook, repo("http://metadata.google.internal/computeMetadata/v1"), "spec.repo", r#""http://metadata.google.internal/computeMetadata/v1""#, "cloud metadata endpoint"),
        case("port-zero", Webhook, repo("https://git.corp.example:0/$NS/web.git"), "spec.repo", r#""https://git.corp.example:0/$NS/web.git""#, "a number from 1 to 65535"),
        case("scp-like", Webhook, repo("git@evil.example:$NS/web.git"), "spec.repo", r#""git@evil.example:$NS/web.git""#, "write it as ssh://git@evil.example/$NS/web.git"),
        case("file-scheme", Webhook, repo("file:///etc/passwd"), "spec.repo", r#""file:///etc/passwd""#, r#"scheme "file" is not allowed; use https://, http:// or ssh://"#),
        // The schema has no pattern on spec.repo: the API server would quote the whole value, password included.
        case("password-and-space", Webhook, repo("https://deploy:hunter2@git.corp.example/$NS/web .git"), "spec.repo", r#""https://deploy:***@git.corp.example/$NS/web .git""#, "whitespace, control characters and backslashes are not allowed"),
        // Path traversal.
        case("path-dot-dot", Schema, with(json!({"path": "deploy/../../etc"})), "spec.path", r#""deploy/../../etc""#, "must not contain '..' segments"),
        case("path-absolute", Schema, with(json!({"path": "/etc/kubernetes"})), "spec.path", r#""/etc/kubernetes""#, "must be relative to the repository root"),
        case("path-encoded", Webhook, with(json!({"path": "%2e%2e/%2e%2e/etc"})), "spec.path", r#""%2e%2e/%2e%2e/etc""#, "not URL-decoded, so write the characters themselves"),
        case("path-drive", Webhook, with(json!({"path": "C:/Windows/System32"})), "spec.path", r#""C:/Windows/System32""#, "relative to the repository root with '/' separators"),
        case("path-backslash", Webhook, with(json!({"path": r"deploy\..\..\etc"})), "spec.path", r#""deploy\\..\\..\\etc""#, "separate directories with '/'"),
        case("path-nul", Schema, with(json!({"path": "deploy\u{0}/../etc"})), "spec.path", r#""deploy\x00/../etc""#, r"should match '^[^\x00-\x1f\x7f]*$'"),
        // Invalid refs.
        case("ref-dot-dot", Webhook, with(json!({"ref": {"branch": "main..evil"}})), "spec.ref.branch", r#""main..evil""#, "must not contain two consecutive dots"),
        case("ref-reflog", Webhook, with(json!({"ref": {"branch": "main@{1}"}})), "spec.ref.branch", r#""main@{1}""#, "must not contain that sequence"),
        case("ref-control", Webhook, with(json!({"ref": {"tag": "v1\u{7}"}})), "spec.ref.tag", r#""v1\u{7}""#, "must not contain control characters"),
        case("ref-option", Webhook, with(json!({"ref": {"branch": "--upload-pack=evil"}})), "spec.ref.branch", r#""--upload-pack=evil""#, "must not start with '-'"),
        case("ref-head", Webhook, with(json!({"ref": {"branch": "HEAD"}})), "spec.ref.branch", r#""HEAD""#, "name the branch or tag itself"),
        case("ref-300", Schema, with(json!({"ref": {"branch": "b".repeat(300)}})), "spec.ref.branch", "", "may not be more than 255 bytes"),
        case("ref-two", Schema, with(json!({"ref": {"branch": "main", "tag": "v1"}})), "spec.ref", "", "exactly one of branch, tag or commit must be set"),
        case("commit-not-hex", Schema, with(json!({"ref": {"commit": "z".repeat(40)}})), "spec.ref.commit", &format!("\"{}\"", "z".repeat(40)), "should match '^([0-9a-f]{40}|[0-9a-f]{64})$'"),
        case("commit-short", Schema, with(json!({"ref": {"commit": "deadbeef"}})), "spec.ref.commit", r#""deadbeef""#, "should match '^([0-9a-f]{40}|[0-9a-f]{64})$'"),
        // Namespaces.
        case("target-system", Webhook, with(json!({"targetNamespace": "kube-system"})), "spec.targetNamespace", r#""kube-system""#, "allowed: $NS, $NS-*"),
        case("target-neighbour", Webhook, with(json!({"targetNamespace": "team-other"})), "spec.targetNamespace", r#""team-other""#, "allowed: $NS, $NS-*"),
    ]
}

/// What the API server itself does with objects past its limits, before
/// any webhook: the request size (3 MiB), JSON depth, strict decoding, and
/// Kubernetes' own metadata validation.
struct Limit {
    name: &'static str,
    /// The raw request body.
    body: Vec<u8>,
    code: u16,
    /// Every piece the message must hold.
    says: &'static [&'static str],
}

/// `depth` nested objects around `inner`: `{"a":{"a":...inner...}}`.
fn nested(depth: usize, key: &str, inner: &str) -> String {
    format!(
        "{}{inner}{}",
        format!(r#"{{"{key}":"#).repeat(depth),
        "}".repeat(depth)
    )
}

/// A FluxConfig's JSON with `metadata` and `spec` given as JSON text.
fn raw(metadata: &str, spec: &str) -> Vec<u8> {
    format!(r#"{{"apiVersion":"fluxgate.dev/v1alpha1","kind":"FluxConfig","metadata":{metadata},"spec":{spec}}}"#)
        .into_bytes()
}

/// `count` distinct labels of about 125 bytes each.
fn many_labels(count: usize) -> String {
    let labels: Vec<String> = (0..count)
        .map(|i| format!(r#""l{i:06}-{}":"{}""#, "k".repeat(48), "v".repeat(63)))
        .collect();
    format!("{{{}}}", labels.join(","))
}

#[rustfmt::skip]
fn limits(ns: &str) -> Vec<Limit> {
    let spec = format!(r#"{{"repo":"https://git.corp.example/{ns}/web.git"}}"#);
    let huge = "a".repeat(NEAR_LIMIT);
    vec![
        Limit { name: "request-over-3mib", body: raw(r#"{"name":"request-over-3mib"}"#, &format!(r#"{{"repo":"https://git.corp.example/{ns}/web.git","path":"{}"}}"#, "a".repeat(APISERVER_MAX_BODY))), code: 413, says: &["Request entity too large: limit is 3145728"] },
        Limit { name: "nesting-10001", body: raw(r#"{"name":"nesting-10001"}"#, &nested(10_001, "a", "1")), code: 400, says: &["json parse error", "exceeded max depth"] },
        Limit { name: "nested-unknown-field", body: raw(r#"{"name":"nested-unknown-field"}"#, &format!(r#"{{"repo":"https://git.corp.example/{ns}/web.git","extra":{}}}"#, nested(100, "a", "1"))), code: 400, says: &[r#"strict decoding error: unknown field "spec.extra""#] },
        Limit { name: "huge-name", body: raw(&format!(r#"{{"name":"{huge}"}}"#), &spec), code: 422, says: &["metadata.name", "must be no more than 253 characters"] },
        Limit { name: "huge-label-value", body: raw(&format!(r#"{{"name":"huge-label-value","labels":{{"a":"{huge}"}}}}"#), &spec), code: 422, says: &[r#"FluxConfig.fluxgate.dev "huge-label-value" is invalid: metadata.labels: Invalid value"#, "must be no more than 63 bytes"] },
    ]
}

/// A message for the test log: a huge one as its head and tail.
fn abbreviate(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    if chars.len() <= 600 {
        return message.to_owned();
    }
    let head: String = chars[..300].iter().collect();
    let tail: String = chars[chars.len() - 300..].iter().collect();
    format!("{head} … {tail}")
}

/// Serialises the tests of this file: they read the shared webhook's
/// counters before and after.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `GET path` on the webhook's plain-HTTP admin port: status and body.
async fn admin_get(path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let admin = webhook().await.admin;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("the admin port answers within 5 s");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The webhook's request counter for `result` (`allowed`, `denied`,
/// `error`), over every kind and operation.
async fn requests(result: &str) -> u64 {
    let (code, text) = admin_get("/metrics").await;
    assert_eq!(code, 200, "{text}");
    let label = format!("result=\"{result}\"");
    text.lines()
        .filter(|l| l.starts_with("fluxgate_webhook_requests_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The webhook is unharmed: `/readyz` is 200, and a valid FluxConfig goes
/// through the API server and the webhook well within the webhook timeout.
async fn assert_webhook_healthy(client: &Client, ns: &str) {
    let (code, body) = admin_get("/readyz").await;
    assert_eq!(code, 200, "/readyz: {body}");
    for _ in 0..3 {
        let started = Instant::now();
        create(client, ns, valid("after", ns), true).await.unwrap();
        let took = started.elapsed();
        eprintln!("a valid FluxConfig after the hostile ones: admitted in {took:?}");
        assert!(took < webhook_timeout() / 5, "admission took {took:?}");
    }
}

#[tokio::test]
async fn hostile_flux_configs_are_refused_with_clear_messages() {
    let _serial = SERIAL.lock().await;
    with_temp_ns("hostile", |client, ns| async move {
        set_up(&client, &ns).await;
        let timeout = webhook_timeout();
        let errors_before = requests("error").await;
        let denied_before = requests("denied").await;
        let sub = |s: &str| s.replace(NS, &ns);
        let cases = cases();
        for case in &cases {
            let metadata: Value = serde_json::from_str(&sub(&case.metadata.to_string())).unwrap();
            let spec: Value = serde_json::from_str(&sub(&case.spec.to_string())).unwrap();
            let started = Instant::now();
            let answer = create(&client, &ns, object(case.name, metadata, spec), false).await;
            let took = started.elapsed();
            let Err(Refusal { code, message }) = answer else {
                panic!("{} was admitted", case.name);
            };
            eprintln!("{} ({code}, {took:?}): {message}", case.name);
            assert!(took < timeout, "{}: {took:?}", case.name);
            assert!(
                message.len() < 1024,
                "{}: a {} byte message",
                case.name,
                message.len()
            );
            let object = match case.by {
                By::Schema => {
                    assert_eq!(code, 422, "{}: {message}", case.name);
                    format!("FluxConfig.fluxgate.dev \"{}\" is invalid: ", case.name)
                }
                By::Webhook => {
                    assert_eq!(code, 403, "{}: {message}", case.name);
                    format!(
                        "admission webhook \"{FC_WEBHOOK}\" denied the request: FluxConfig {ns}/{}: ",
                        case.name
                    )
                }
            };
            assert!(message.starts_with(&object), "{}: {message}", case.name);
            for needle in [case.field.to_owned(), sub(&case.shown), sub(case.allowed)] {
                assert!(
                    message.contains(&needle),
                    "{}: {message}\n  does not say {needle:?}",
                    case.name
                );
            }
            assert!(!message.contains(PASSWORD), "{}: {message}", case.name);
            assert!(!message.contains("ghp_16C7e42F"), "{}: {message}", case.name);
        }
        // Every webhook case was a denial the webhook decided, none an
        // error the API server had to turn into a refusal.
        let by_webhook = cases.iter().filter(|c| c.by == By::Webhook).count();
        assert_eq!(requests("error").await, errors_before);
        assert!(requests("denied").await >= denied_before + u64::try_from(by_webhook).unwrap());
        assert_webhook_healthy(&client, &ns).await;
        tear_down(&client, &ns).await;
    })
    .await;
}

#[tokio::test]
async fn the_api_server_refuses_what_is_past_its_limits_before_the_webhook() {
    let _serial = SERIAL.lock().await;
    with_temp_ns("hostile-limits", |client, ns| async move {
        set_up(&client, &ns).await;
        let seen = || async {
            requests("allowed").await + requests("denied").await + requests("error").await
        };
        let before = seen().await;
        for limit in limits(&ns) {
            let started = Instant::now();
            let answer = create(&client, &ns, limit.body, false).await;
            let took = started.elapsed();
            let Err(Refusal { code, message }) = answer else {
                panic!("{} was admitted", limit.name);
            };
            let shown = abbreviate(&message);
            eprintln!(
                "{} ({code}, {took:?}, {} byte message): {shown}",
                limit.name,
                message.len()
            );
            assert!(took < webhook_timeout(), "{}: {took:?}", limit.name);
            assert_eq!(code, limit.code, "{}: {shown}", limit.name);
            for needle in limit.says {
                assert!(
                    message.contains(needle),
                    "{}: {shown}\n  does not say {needle:?}",
                    limit.name
                );
            }
        }
        // None of them reached the webhook.
        assert_eq!(seen().await, before);

        // etcd's limit (1.5 MiB per value), in the platform namespace where
        // the webhook does not look, so the refusal is etcd's own.
        let platform = stack::PLATFORM_NAMESPACE;
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": platform}})).unwrap();
        let _ = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await;
        let body = raw(
            &format!(r#"{{"name":"over-etcd","labels":{}}}"#, many_labels(14_000)),
            &format!(r#"{{"repo":"https://git.corp.example/{ns}/web.git"}}"#),
        );
        assert!(
            body.len() > 1536 * 1024 && body.len() < APISERVER_MAX_BODY,
            "{}",
            body.len()
        );
        let before = seen().await;
        let Err(Refusal { code, message }) = create(&client, platform, body, false).await else {
            panic!("a FluxConfig over etcd's limit was stored");
        };
        eprintln!("over-etcd ({code}): {message}");
        assert_eq!(code, 500, "{message}");
        assert!(
            message.contains("etcdserver: request is too large"),
            "{message}"
        );
        assert_eq!(seen().await, before);
        assert_webhook_healthy(&client, &ns).await;
        tear_down(&client, &ns).await;
    })
    .await;
}

#[tokio::test]
async fn inputs_past_the_webhooks_own_limits_are_judged_on_their_spec() {
    let _serial = SERIAL.lock().await;
    with_temp_ns("hostile-gaps", |client, ns| async move {
        set_up(&client, &ns).await;
        // Once gaps, now regressions. A valid FluxConfig with 1.4 MiB
        // of labels (the API server would store it) is reviewed and
        // admitted, not failed with the webhook's 413.
        let spec = format!(r#"{{"repo":"https://git.corp.example/{ns}/web.git"}}"#);
        let labels = raw(
            &format!(
                r#"{{"name":"labels-1-4mib","labels":{}}}"#,
                many_labels(11_000)
            ),
            &spec,
        );
        assert!(create(&client, &ns, labels, true).await.is_ok());
        // A huge commit is refused by its length, without the value.
        let huge = "a".repeat(NEAR_LIMIT);
        let commit = raw(
            r#"{"name":"huge-commit"}"#,
            &format!(
                r#"{{"repo":"https://git.corp.example/{ns}/web.git","ref":{{"commit":"{huge}"}}}}"#
            ),
        );
        let Err(Refusal { code, message }) = create(&client, &ns, commit, false).await else {
            panic!("a 1.4 MiB commit was admitted");
        };
        assert_eq!(code, 422);
        assert!(
            message.contains("spec.ref.commit: Too long: may not be more than 64 bytes"),
            "{}",
            abbreviate(&message)
        );
        assert!(message.len() < 1024, "{}", abbreviate(&message));
        // managedFields nested past any JSON reader's depth limit: the
        // webhook never reads them, so the object is judged on its spec,
        // admitted when it is valid and denied with the rule's message
        // when it is not.
        let deep = |name: &str, repo: &str| {
            raw(
                &format!(
                    r#"{{"name":"{name}","managedFields":[{{"manager":"x","operation":"Update","apiVersion":"fluxgate.dev/v1alpha1","fieldsType":"FieldsV1","fieldsV1":{}}}]}}"#,
                    nested(200, "f:a", "{}")
                ),
                &format!(r#"{{"repo":"{repo}"}}"#),
            )
        };
        let valid_repo = format!("https://git.corp.example/{ns}/web.git");
        create(&client, &ns, deep("managed-fields-deep", &valid_repo), true)
            .await
            .unwrap();
        let Err(Refusal { code, message }) = create(
            &client,
            &ns,
            deep("managed-fields-deep", "https://git.corp.example/elsewhere/web.git"),
            false,
        )
        .await
        else {
            panic!("managedFields nested 200 deep smuggled another team's repository in");
        };
        assert_eq!(code, 403, "{}", abbreviate(&message));
        assert!(
            message.contains(&format!(
                r#"FluxConfig {ns}/managed-fields-deep: spec.repo "https://git.corp.example/elsewhere/web.git" is not allowed"#
            )),
            "{}",
            abbreviate(&message)
        );
        assert_webhook_healthy(&client, &ns).await;
        tear_down(&client, &ns).await;
    })
    .await;
}
