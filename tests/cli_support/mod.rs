//! Running the `segstore` binary from a test.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The binary, with `SEGSTORE_DIR` cleared so the caller's environment cannot leak in.
pub fn segstore() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_segstore"));
    cmd.env_remove("SEGSTORE_DIR");
    cmd
}

/// Runs `cmd` to its end with `stdin` as its input (none: `/dev/null`) and returns what it
/// printed. Fails the test if it panicked (exit 101) or was killed by a signal.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn segstore");
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let bytes = bytes.to_vec();
        // Write from a thread so that a large input cannot deadlock against stdout.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let output = child.wait_with_output().expect("wait");
    let code = output.status.code().expect("exited by a signal");
    assert_ne!(
        code,
        101,
        "panic: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
