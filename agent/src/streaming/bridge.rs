//! The WebSocket ends we terminate: the channel protocol of exec/attach bridged onto an SPDY
//! client session towards the CRI streaming server, and the port-forward tunnel (WebSocket
//! binary messages ↔ the SPDY byte stream).

use std::collections::HashMap;

use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::channel::{self, ClientMessage, StreamOptions};
use super::spdy_client::{self, SpdyEvent};
use super::upstream::UpstreamResponse;

/// Runs an exec/attach: `ws` speaks `protocol` (v5 or v4 channel), `upstream` is the CRI
/// server's connection after its 101 to our `v4.channel.k8s.io` SPDY upgrade.
pub async fn run_remote_command<S>(
    ws: WebSocketStream<S>,
    protocol: &str,
    options: StreamOptions,
    upstream: UpstreamResponse,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut source) = ws.split();
    let (mut spdy, mut events) = spdy_client::start(upstream.stream, upstream.rest);
    let streams = match open_streams(&mut spdy, &options).await {
        Ok(streams) => streams,
        Err(e) => {
            let status = channel::failure_status(&format!("opening the exec streams: {e}"));
            let _ = sink
                .send(Message::binary(channel::encode_server(
                    channel::ERROR,
                    &status,
                )))
                .await;
            close_normally(&mut sink).await;
            return;
        }
    };
    // Tell the client the streams are up: an empty message on the lowest writable channel.
    let first = if options.stdout {
        channel::STDOUT
    } else if options.stderr {
        channel::STDERR
    } else {
        channel::ERROR
    };
    if sink
        .send(Message::binary(channel::encode_server(first, &[])))
        .await
        .is_err()
    {
        return;
    }
    let mut stdin_open = streams.stdin.is_some();
    loop {
        tokio::select! {
            message = source.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    let sent = match channel::decode_client(&data, protocol) {
                        ClientMessage::Stdin(bytes) => match streams.stdin {
                            Some(id) if stdin_open => spdy.data(id, bytes, false).await,
                            _ => Ok(()),
                        },
                        ClientMessage::Resize(bytes) => match streams.resize {
                            Some(id) => spdy.data(id, bytes, false).await,
                            None => Ok(()),
                        },
                        ClientMessage::Close(channel::STDIN) => match streams.stdin {
                            Some(id) if stdin_open => {
                                stdin_open = false;
                                spdy.data(id, &[], true).await
                            }
                            _ => Ok(()),
                        },
                        ClientMessage::Close(_) | ClientMessage::Ignored => Ok(()),
                    };
                    if sent.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    let _ = spdy.shutdown().await;
                    return;
                }
                Some(Ok(_)) => {}
            },
            event = events.recv() => match event {
                Some(SpdyEvent::Data { stream_id, data, .. }) => {
                    if let Some(&ch) = streams.channels.get(&stream_id)
                        && !data.is_empty()
                        && sink
                            .send(Message::binary(channel::encode_server(ch, &data)))
                            .await
                            .is_err()
                    {
                        let _ = spdy.shutdown().await;
                        return;
                    }
                }
                Some(SpdyEvent::Ping(id)) => {
                    if spdy.pong(id).await.is_err() {
                        break;
                    }
                }
                Some(SpdyEvent::Reset { .. }) => {}
                Some(SpdyEvent::Closed(reason)) => {
                    if let Some(reason) = reason {
                        tracing::debug!(%reason, "streaming: CRI stream connection failed");
                    }
                    break;
                }
                None => break,
            },
        }
    }
    close_normally(&mut sink).await;
}

/// Ends the WebSocket with a close frame carrying 1000 (normal closure): client-go reads a
/// close frame without a status code (1005) as an error, not as the end of the streams.
async fn close_normally<S>(sink: &mut S)
where
    S: futures::Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

/// The SPDY streams of one exec, and which channel each maps to.
#[derive(Debug, Default)]
struct Streams {
    stdin: Option<u32>,
    resize: Option<u32>,
    channels: HashMap<u32, u8>,
}

async fn open_streams<S: AsyncWrite>(
    spdy: &mut spdy_client::SpdyClient<S>,
    options: &StreamOptions,
) -> std::io::Result<Streams> {
    let mut streams = Streams::default();
    let error = spdy.open(&[("streamtype", "error")]).await?;
    streams.channels.insert(error, channel::ERROR);
    if options.stdin {
        streams.stdin = Some(spdy.open(&[("streamtype", "stdin")]).await?);
    }
    if options.stdout {
        let id = spdy.open(&[("streamtype", "stdout")]).await?;
        streams.channels.insert(id, channel::STDOUT);
    }
    if options.stderr && !options.tty {
        let id = spdy.open(&[("streamtype", "stderr")]).await?;
        streams.channels.insert(id, channel::STDERR);
    }
    if options.tty {
        streams.resize = Some(spdy.open(&[("streamtype", "resize")]).await?);
    }
    Ok(streams)
}

/// Runs a WebSocket-tunnelled port-forward: the payloads of the client's binary messages are
/// its SPDY byte stream, written to `upstream` unchanged, and the other way round.
pub async fn run_tunnel<S>(ws: WebSocketStream<S>, upstream: UpstreamResponse)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut source) = ws.split();
    let UpstreamResponse { rest, stream, .. } = upstream;
    let (mut reader, mut writer) = stream.into_split();
    if !rest.is_empty() && sink.send(Message::binary(rest)).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            message = source.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    if writer.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    let _ = writer.shutdown().await;
                    return;
                }
                Some(Ok(_)) => {}
            },
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        let _ = writer.shutdown().await;
                        return;
                    }
                }
            },
        }
    }
    close_normally(&mut sink).await;
}
