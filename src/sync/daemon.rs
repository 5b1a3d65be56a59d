//! The sync daemon's public face: its configuration, control handles and [`run`].

use super::backoff::BackoffPolicy;
use super::engine;
use crate::store::Store;
use std::fmt;
use std::sync::mpsc;
use std::time::Duration;

/// LaunchDarkly's polling base URI.
pub const DEFAULT_BASE_URI: &str = "https://sdk.launchdarkly.com";
/// LaunchDarkly's streaming base URI.
pub const DEFAULT_STREAM_URI: &str = "https://stream.launchdarkly.com";

/// A server-side SDK key. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SdkKey(pub(super) String);

impl SdkKey {
    /// Wraps a key; `None` if it is empty or holds characters an HTTP header cannot carry.
    pub fn new(key: impl Into<String>) -> Option<SdkKey> {
        let key = key.into();
        let printable = key.bytes().all(|b| (0x21..0x7f).contains(&b));
        (!key.is_empty() && printable).then_some(SdkKey(key))
    }
}

impl fmt::Debug for SdkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SdkKey(<redacted>)")
    }
}

impl fmt::Display for SdkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where to sync from, and every interval of the loop. [`SyncConfig::new`] gives the
/// production values; tests shorten them.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Polling base URI (default [`DEFAULT_BASE_URI`]).
    pub base_uri: String,
    /// Streaming base URI (default [`DEFAULT_STREAM_URI`]).
    pub stream_uri: String,
    /// Sent as the `Authorization` header.
    pub sdk_key: SdkKey,
    /// Longest time without setting `synchronized_on` while the stream is healthy (30 s).
    pub heartbeat: Duration,
    /// After network errors, 408, 429, 5xx, unusable responses, dropped streams and cursor
    /// mismatches (10 s doubling to 30 s).
    pub transient_backoff: BackoffPolicy,
    /// After 401, 403 and other 4xx (5 min doubling to 1 h).
    pub rejected_backoff: BackoffPolicy,
    /// Up to this fraction of each delay is taken off at random (0.5).
    pub jitter: f64,
    /// TCP + TLS connect timeout (10 s).
    pub connect_timeout: Duration,
    /// Time to receive response headers (30 s).
    pub response_timeout: Duration,
    /// Longest silence while reading a poll response (60 s).
    pub poll_read_timeout: Duration,
    /// Longest silence on the stream before it counts as dead (5 min, as LaunchDarkly's SDKs).
    pub stream_read_timeout: Duration,
    /// Largest poll page accepted (256 MiB).
    pub max_page_bytes: u64,
    /// Largest stream event accepted (256 MiB): a larger one ends the stream as a network
    /// failure (reconnect after backoff, catch up by polling).
    pub max_event_bytes: u64,
    /// Key operations per batch when a page or an oversized event is split (200,000).
    pub max_batch_ops: usize,
    /// The certificate authorities to trust for HTTPS, as DER certificates, instead of the
    /// built-in Mozilla roots (`None`, the default: the roots of the `webpki-roots` crate,
    /// compiled in). [`read_ca_file`] reads them from a PEM file.
    pub ca_certificates: Option<Vec<Vec<u8>>>,
}

impl SyncConfig {
    /// The production configuration against LaunchDarkly's endpoints.
    pub fn new(sdk_key: SdkKey) -> SyncConfig {
        SyncConfig {
            base_uri: DEFAULT_BASE_URI.to_owned(),
            stream_uri: DEFAULT_STREAM_URI.to_owned(),
            sdk_key,
            heartbeat: Duration::from_secs(30),
            transient_backoff: BackoffPolicy {
                initial: Duration::from_secs(10),
                max: Duration::from_secs(30),
            },
            rejected_backoff: BackoffPolicy {
                initial: Duration::from_secs(5 * 60),
                max: Duration::from_secs(60 * 60),
            },
            jitter: 0.5,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            poll_read_timeout: Duration::from_secs(60),
            stream_read_timeout: Duration::from_secs(5 * 60),
            max_page_bytes: 256 << 20,
            max_event_bytes: 256 << 20,
            max_batch_ops: 200_000,
            ca_certificates: None,
        }
    }
}

/// The certificates of a PEM file (`-----BEGIN CERTIFICATE-----` blocks; other blocks are
/// ignored), as DER, for [`SyncConfig::ca_certificates`]. An unreadable file, a malformed
/// block or a file without any certificate is an error, whose message names the file.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert.der().to_vec()),
            Ok(_) => {}
            Err(e) => return Err(format!("{}: not a valid PEM file: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// Why [`run`] returned an error: the store failed (a sync never gives up on the network).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A write to the store failed; the writer may need reopening.
    #[error("store write failed: {0}")]
    Store(#[from] crate::Error),
    /// A helper thread could not be started.
    #[error("could not start a thread: {0}")]
    Thread(std::io::Error),
}

/// What [`run`] did, for its caller's final report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncSummary {
    /// Patches applied.
    pub patches: u64,
    /// Key operations applied.
    pub ops: u64,
    /// Stream events applied.
    pub events: u64,
    /// Failures retried.
    pub retries: u64,
}

/// The channel a running sync listens to. Make one, take [`Stopper`]s from it, pass it to
/// [`run`].
pub struct SyncControl {
    pub(super) tx: mpsc::Sender<engine::Msg>,
    pub(super) rx: mpsc::Receiver<engine::Msg>,
}

impl SyncControl {
    /// A new control channel.
    pub fn new() -> SyncControl {
        let (tx, rx) = mpsc::channel();
        SyncControl { tx, rx }
    }

    /// A handle that stops the sync from any thread (a signal handler thread, a test).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.tx.clone())
    }
}

impl Default for SyncControl {
    fn default() -> Self {
        SyncControl::new()
    }
}

/// Asks a running sync to stop: it finishes the batch in hand and returns `Ok`.
#[derive(Clone)]
pub struct Stopper(mpsc::Sender<engine::Msg>);

impl Stopper {
    /// Requests the stop (harmless if the sync has already returned).
    pub fn stop(&self) {
        let _ = self.0.send(engine::Msg::Stop);
    }
}

/// Runs the sync loop on `store` until [`Stopper::stop`] is called. Returns `Ok` after a
/// requested stop (every applied batch is durable by then), or the store's error if a write
/// fails. Network failures never end it: they are logged and retried.
pub fn run(
    store: &Store,
    config: &SyncConfig,
    control: SyncControl,
) -> Result<SyncSummary, SyncError> {
    engine::Engine::new(store, config, control).run()
}

#[cfg(test)]
mod ca_file_tests {
    use super::read_ca_file;

    /// A self-signed P-256 certificate (CN=segstore-test-ca).
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBjDCCATOgAwIBAgIUPi2S5vc7UCLpRM33NxXdaYkspr4wCgYIKoZIzj0EAwIw\nGzEZMBcGA1UEAwwQc2Vnc3RvcmUtdGVzdC1jYTAgFw0yNjEyMDExMTI5MDVaGA8y\nMTI2MTEwNzExMjkwNVowGzEZMBcGA1UEAwwQc2Vnc3RvcmUtdGVzdC1jYTBZMBMG\nByqGSM49AgEGCCqGSM49AwEHA0IABB/4ec7IR9v59tGHhtoj4rBTjgBYyIO6Ws5S\ncQDwExc4R3H8Sql8ZRa/4WnHg5gd5wT58hAf1p2nYU6gBPQ07LijUzBRMB0GA1Ud\nDgQWBBRhM+j0NsufSisTYsjpfNKTPjlrxTAfBgNVHSMEGDAWgBRhM+j0NsufSisT\nYsjpfNKTPjlrxTAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIDaK\nCykfaE1EGb8yyQ1B9JxYjQTOJGgYCw3MlWrBHdKTAiAii7WJzLxoMKhBT2ds7Mrg\ndD+Z/veuskFT6WfjfeVf1w==\n-----END CERTIFICATE-----";

    fn file(content: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    fn der(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    #[test]
    fn every_certificate_of_a_bundle_and_nothing_else() {
        let key =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        let (_dir, path) = file(&format!("# a bundle\n{CERT}\n{key}{CERT}\n"));
        let certs = read_ca_file(&path).unwrap();
        assert_eq!(certs, vec![der(CERT), der(CERT)]);
        assert_eq!(certs[0][0], 0x30, "DER starts with a SEQUENCE");
    }

    #[test]
    fn no_certificate_is_an_error_naming_the_file() {
        for content in [
            "",
            "not pem at all\n",
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
        ] {
            let (_dir, path) = file(content);
            let err = read_ca_file(&path).unwrap_err();
            assert!(err.contains("no PEM certificate"), "{content:?}: {err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
    }

    #[test]
    fn a_broken_block_or_a_missing_file_is_an_error() {
        let truncated = &CERT[..CERT.len() / 2];
        let (_dir, path) = file(truncated);
        let err = read_ca_file(&path).unwrap_err();
        assert!(err.contains("not a valid PEM file"), "{err}");

        let missing = path.with_file_name("absent.pem");
        let err = read_ca_file(&missing).unwrap_err();
        assert!(
            err.starts_with(&format!("reading {}", missing.display())),
            "{err}"
        );
    }
}
