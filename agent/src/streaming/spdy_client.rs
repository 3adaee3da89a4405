//! A minimal SPDY/3.1 client session over an upgraded connection: open streams, send data,
//! answer pings; a reader task turns incoming frames into [`SpdyEvent`]s. No flow control:
//! the CRI streaming server (spdystream) does not enforce windows.

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, WriteHalf};
use tokio::sync::mpsc;

use super::spdy::{Decoder, Encoder, FLAG_FIN, Frame, SpdyError};

/// What the reader task saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpdyEvent {
    Data {
        stream_id: u32,
        data: Vec<u8>,
        fin: bool,
    },
    /// The server asked for a PING reply.
    Ping(u32),
    Reset {
        stream_id: u32,
        status: u32,
    },
    /// The connection ended (with the reason when it was an error).
    Closed(Option<String>),
}

/// The writing side of a client session.
pub struct SpdyClient<S> {
    io: WriteHalf<S>,
    encoder: Encoder,
    next_stream_id: u32,
}

impl<S> std::fmt::Debug for SpdyClient<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpdyClient")
            .field("next_stream_id", &self.next_stream_id)
            .finish_non_exhaustive()
    }
}

/// Starts a session on `io`; `already_read` are bytes of the server's first frames read along
/// with the HTTP response head.
pub fn start<S>(io: S, already_read: Vec<u8>) -> (SpdyClient<S>, mpsc::Receiver<SpdyEvent>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(io);
    let (events, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut decoder = Decoder::new();
        let mut buf = already_read;
        let reason = loop {
            match decode_all(&mut decoder, &mut buf, &events).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => break Some(e.to_string()),
            }
            let mut chunk = vec![0u8; 32 * 1024];
            match reader.read(&mut chunk).await {
                Ok(0) => break None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => break Some(e.to_string()),
            }
        };
        let _ = events.send(SpdyEvent::Closed(reason)).await;
    });
    let client = SpdyClient {
        io: writer,
        encoder: Encoder::new(),
        next_stream_id: 1,
    };
    (client, receiver)
}

/// Decodes the whole frames at the front of `buf` into events; `Ok(false)` when nobody listens.
async fn decode_all(
    decoder: &mut Decoder,
    buf: &mut Vec<u8>,
    events: &mpsc::Sender<SpdyEvent>,
) -> Result<bool, SpdyError> {
    let mut used = 0;
    while let Some((frame, len)) = decoder.decode(&buf[used..])? {
        used += len;
        let event = match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => SpdyEvent::Data {
                stream_id,
                data,
                fin: flags & FLAG_FIN != 0,
            },
            Frame::Ping { id } => SpdyEvent::Ping(id),
            Frame::RstStream { stream_id, status } => SpdyEvent::Reset { stream_id, status },
            _ => continue,
        };
        if events.send(event).await.is_err() {
            return Ok(false);
        }
    }
    buf.drain(..used);
    Ok(true)
}

impl<S: AsyncWrite> SpdyClient<S> {
    /// Opens a stream with `headers`; returns its id.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> std::io::Result<u32> {
        let stream_id = self.next_stream_id;
        self.next_stream_id += 2;
        let headers = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        self.send(&Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers,
        })
        .await?;
        Ok(stream_id)
    }

    /// Sends `data` on a stream; `fin` ends our half of it.
    pub async fn data(&mut self, stream_id: u32, data: &[u8], fin: bool) -> std::io::Result<()> {
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![data]
        } else {
            data.chunks(64 * 1024).collect()
        };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let flags = if fin && i == last { FLAG_FIN } else { 0 };
            self.send(&Frame::Data {
                stream_id,
                flags,
                data: chunk.to_vec(),
            })
            .await?;
        }
        Ok(())
    }

    /// Answers a server PING.
    pub async fn pong(&mut self, id: u32) -> std::io::Result<()> {
        self.send(&Frame::Ping { id }).await
    }

    /// Closes the write side of the connection.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.io.shutdown().await
    }

    async fn send(&mut self, frame: &Frame) -> std::io::Result<()>
    where
        S: AsyncWrite,
    {
        let mut bytes = Vec::new();
        self.encoder
            .encode(frame, &mut bytes)
            .map_err(std::io::Error::other)?;
        self.io.write_all(&bytes).await?;
        self.io.flush().await
    }
}
