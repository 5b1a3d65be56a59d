//! One client connection's I/O: read requests, answer them in order, write the replies,
//! enforce the timeouts, and stop at shutdown between commands.

use super::request::RequestDecoder;
use super::server::{Shared, Stats};
use super::session::{After, Session};
use redis_protocol::bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// Replies are flushed once this many bytes are waiting, even mid-pipeline.
const FLUSH_AT: usize = 64 << 10;

/// The least free space kept in the read buffer before a read.
const READ_CHUNK: usize = 16 << 10;

/// Serves one connection until the client leaves, a protocol error, a timeout, or shutdown.
pub async fn serve_connection<S>(
    mut stream: S,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Requests and replies alternate on one task, so the stream is not split (a split stream
    // takes a lock on every read and write).
    let mut session = Session::new(shared.clone());
    let mut decoder = RequestDecoder::new(shared.config.request_limits);
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::new();
    loop {
        // Answer every whole command that has arrived, in order.
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(args)) => {
                    let (reply, after) = session.handle(args).await;
                    reply.encode(session.protocol, &mut output);
                    if after == After::Close {
                        let _ = stream.write_all(&output).await;
                        return;
                    }
                    if output.len() >= FLUSH_AT && stream.write_all(&output.split()).await.is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    Stats::bump(&shared.stats.protocol_errors);
                    output.extend_from_slice(format!("-ERR {e}\r\n").as_bytes());
                    let _ = stream.write_all(&output).await;
                    return;
                }
            }
        }
        if !output.is_empty() && stream.write_all(&output.split()).await.is_err() {
            return;
        }
        if *shutdown.borrow() {
            return;
        }
        // Wait for more: a request begun must finish within the request timeout; between
        // requests the idle timeout (if any) applies.
        let limit: Option<Duration> = if decoder.in_request(&input) {
            Some(shared.config.request_timeout)
        } else {
            shared.config.idle_timeout
        };
        if input.capacity() - input.len() < READ_CHUNK {
            input.reserve(READ_CHUNK);
        }
        let read = async {
            match limit {
                Some(limit) => tokio::time::timeout(limit, stream.read_buf(&mut input))
                    .await
                    .ok(),
                None => Some(stream.read_buf(&mut input).await),
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            result = read => match result {
                None => {
                    Stats::bump(&shared.stats.timed_out);
                    return;
                }
                Some(Ok(0)) | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
