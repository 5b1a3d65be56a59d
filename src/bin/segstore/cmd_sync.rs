//! `segstore sync`: keep the store current from LaunchDarkly's big-segment feed until SIGTERM
//! or SIGINT.

use crate::common::{writer_options, CmdResult, Failure, WriterArgs};
use clap::Args;
use segstore::sync::{
    self, BackoffPolicy, SdkKey, SyncConfig, SyncControl, DEFAULT_BASE_URI, DEFAULT_STREAM_URI,
};
use segstore::Store;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::level_filters::LevelFilter;
use tracing::{error, info};

/// The environment variable holding the SDK key.
pub const SDK_KEY_ENV: &str = "LD_SDK_KEY";

/// Arguments of `sync`.
#[derive(Debug, Args)]
#[command(
    after_help = "The SDK key comes from the LD_SDK_KEY environment variable only (never \
the command line) and is sent as the Authorization header; it is never logged.\n\
The loop: poll GET {base-uri}/sdk/big-segments/revisions?after={cursor} until a page is empty; \
open the stream GET {stream-uri}/big-segments and poll once more to close the gap; apply each \
stream event as one atomic batch with its cursor advance. A cursor mismatch applies nothing of \
the event and restarts from the stored cursor. synchronized_on is set after catch-up, after \
each event and every 30 s while the stream is healthy.\n\
Failures are retried: network errors, 408, 429 and 5xx after 10 s growing to 30 s; 401, 403 and \
other 4xx after 5 min growing to 1 h; each delay less up to 50% at random. Only SIGTERM/SIGINT \
(exit 0, after the batch in hand) or a store failure (exit 1) end it.\n\
Proxies: ALL_PROXY, HTTPS_PROXY or HTTP_PROXY (the first set, upper or lower case), with \
NO_PROXY. HTTPS trusts the built-in Mozilla roots, or those of --ca-file.\n\
Logs go to stderr; SEGSTORE_LOG=error|warn|info|debug|trace sets the level (default info)."
)]
pub struct SyncArgs {
    /// Polling base URI.
    #[arg(long, default_value = DEFAULT_BASE_URI, value_name = "URL")]
    pub base_uri: String,
    /// Streaming base URI.
    #[arg(long, default_value = DEFAULT_STREAM_URI, value_name = "URL")]
    pub stream_uri: String,
    /// Create the store if the directory has none.
    #[arg(long)]
    pub init: bool,
    /// Trust the certificate authorities in this PEM file for HTTPS instead of the built-in
    /// Mozilla roots (for a TLS-inspecting proxy, or a private mirror of the endpoints).
    #[arg(long, env = "SEGSTORE_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub writer: WriterArgs,
    /// Log level (error, warn, info, debug, trace).
    #[arg(
        long,
        env = "SEGSTORE_LOG",
        default_value = "info",
        value_name = "LEVEL"
    )]
    pub log_level: LevelFilter,

    // Testing knobs (hidden): every interval in milliseconds, so tests never wait minutes.
    /// Heartbeat interval, ms.
    #[arg(long, hide = true, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// Transient backoff, ms: INITIAL,MAX.
    #[arg(long, hide = true, value_name = "MS,MS", value_parser = parse_policy)]
    pub transient_backoff_ms: Option<BackoffPolicy>,
    /// Rejection backoff, ms: INITIAL,MAX.
    #[arg(long, hide = true, value_name = "MS,MS", value_parser = parse_policy)]
    pub rejected_backoff_ms: Option<BackoffPolicy>,
    /// Stream read timeout, ms.
    #[arg(long, hide = true, value_name = "MS")]
    pub stream_read_timeout_ms: Option<u64>,
}

fn parse_policy(s: &str) -> Result<BackoffPolicy, String> {
    let (initial, max) = s
        .split_once(',')
        .ok_or_else(|| "expected INITIAL_MS,MAX_MS".to_owned())?;
    let ms = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|e| format!("{v:?}: {e}"))
    };
    Ok(BackoffPolicy {
        initial: ms(initial)?,
        max: ms(max)?,
    })
}

/// Runs `sync`.
pub fn run(dir: &Path, args: &SyncArgs) -> CmdResult {
    let key = std::env::var(SDK_KEY_ENV).unwrap_or_default();
    let sdk_key = SdkKey::new(key).ok_or_else(|| {
        Failure::usage(format!(
            "{SDK_KEY_ENV} must hold the environment's server-side SDK key (it is read from \
             the environment only)"
        ))
    })?;
    let mut config = SyncConfig::new(sdk_key);
    config.base_uri = args.base_uri.clone();
    config.stream_uri = args.stream_uri.clone();
    if let Some(path) = &args.ca_file {
        let certs =
            sync::read_ca_file(path).map_err(|e| Failure::usage(format!("--ca-file: {e}")))?;
        config.ca_certificates = Some(certs);
    }
    if let Some(ms) = args.heartbeat_ms {
        config.heartbeat = Duration::from_millis(ms);
    }
    if let Some(policy) = args.transient_backoff_ms {
        config.transient_backoff = policy;
    }
    if let Some(policy) = args.rejected_backoff_ms {
        config.rejected_backoff = policy;
    }
    if let Some(ms) = args.stream_read_timeout_ms {
        config.stream_read_timeout = Duration::from_millis(ms);
    }

    // A second subscriber cannot be installed; that is only possible in tests that call `run`
    // twice in one process, where the first one keeps logging.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(args.log_level)
        .with_target(false)
        .try_init();

    let store = if args.init {
        Store::open_or_create(dir, writer_options(&args.writer))?
    } else {
        Store::open(dir, writer_options(&args.writer))?
    };
    let control = SyncControl::new();
    let stopper = control.stopper();
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|e| Failure::runtime(format!("installing signal handlers: {e}")))?;
    let signal_handle = signals.handle();
    std::thread::Builder::new()
        .name("segstore-sync-signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                info!("{name} received: stopping after the batch in hand");
                stopper.stop();
            }
        })
        .map_err(|e| Failure::runtime(format!("starting the signal thread: {e}")))?;

    let result = sync::run(&store, &config, control);
    signal_handle.close();
    // Dropping the store closes it: every batch was fsynced when written.
    drop(store);
    match result {
        Ok(_) => Ok(()),
        Err(e) => {
            error!("{e}");
            Err(Failure::runtime(format!("sync: {e}")))
        }
    }
}
