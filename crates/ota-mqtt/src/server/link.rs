//! One connection's socket and MQTT protocol state, driven by the session's own task.
//!
//! `mqtt-protocol-core` is sans-I/O: it parses the bytes handed to it, tracks packet ids,
//! keep-alive and flow control, and answers with events (packets received, packets to send,
//! timers, close). This module is the I/O around it, written for many idle connections:
//!
//! - no task besides the session's, no channel, no timer task: the keep-alive deadline is a
//!   field polled by the session's `select!`;
//! - no receive buffer while waiting: a plain TCP connection waits for readiness and then
//!   reads into a buffer on the stack, which the core copies packets out of before anything
//!   else is awaited (a TLS stream needs a buffer while it reads, so it owns a small one);
//! - no send buffer while idle: packets queued by one round of work are written together
//!   and the buffer is released.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use mqtt_protocol_core::mqtt::{
    self,
    connection::{ConnectionOptions, Event, TimerKind},
    packet::{GenericPacketTrait, Packet},
    role,
};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

/// The protocol state of one server-side connection.
pub(super) type Connection = mqtt::Connection<role::Server>;

/// Bytes read from a socket at once.
const READ_SIZE: usize = 4096;
/// Bytes a TLS connection reads at once (into a buffer it keeps: rustls already holds its
/// own record buffers, so this is a small part of a TLS connection's memory).
const TLS_READ_SIZE: usize = 1024;
/// Queued output written before the next packet is handled.
const FLUSH_AT: usize = 64 * 1024;
/// Packets parsed from a read before the session handles them.
const FEED_PACKETS: usize = 16;
/// How long a write may make no progress (a peer that stops reading) before the
/// connection is given up.
const WRITE_STALL: Duration = Duration::from_secs(30);

/// What ended a wait in [`Link::fill_or`].
pub(super) enum Woke<T> {
    /// Bytes arrived or the keep-alive ran out (events are pending), or the connection is
    /// over.
    Link(Result<(), Closed>),
    /// The other future completed.
    Other(T),
}

/// The byte stream under the protocol.
pub(super) enum Wire {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP, with the buffer it reads into.
    Tls(Box<TlsStream<TcpStream>>, Box<[u8]>),
}

impl Wire {
    /// A TLS stream with its read buffer.
    pub(super) fn tls(stream: TlsStream<TcpStream>) -> Self {
        Self::Tls(Box::new(stream), vec![0; TLS_READ_SIZE].into_boxed_slice())
    }

    /// Writes all of `bytes`, failing when a write makes no progress for [`WRITE_STALL`].
    async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let stalled = || io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading");
        while !bytes.is_empty() {
            let n = match self {
                Self::Tcp(s) => tokio::time::timeout(WRITE_STALL, s.write(bytes)).await,
                Self::Tls(s, _) => tokio::time::timeout(WRITE_STALL, s.write(bytes)).await,
            }
            .map_err(|_| stalled())??;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = bytes.get(n..).unwrap_or_default();
        }
        if let Self::Tls(s, _) = self {
            tokio::time::timeout(WRITE_STALL, s.flush())
                .await
                .map_err(|_| stalled())??;
        }
        Ok(())
    }

    async fn shutdown(&mut self) {
        let close = async {
            match self {
                Self::Tcp(s) => s.shutdown().await,
                Self::Tls(s, _) => s.shutdown().await,
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
    }
}

/// One non-blocking read into a stack buffer, fed to `conn` before returning (bytes beyond
/// one batch of packets are copied to `rest`), so the buffer never lives in the waiting
/// session's state.
fn read_now(
    s: &TcpStream,
    conn: &mut Connection,
    rest: &mut Vec<u8>,
) -> io::Result<Option<Vec<Event>>> {
    let mut buf = [0u8; READ_SIZE];
    let n = s.try_read(&mut buf)?;
    Ok((n > 0).then(|| feed_keeping_rest(conn, &buf[..n], rest)))
}

/// [`feed`] one batch of `bytes`; what it did not take goes to the end of `rest`.
fn feed_keeping_rest(conn: &mut Connection, bytes: &[u8], rest: &mut Vec<u8>) -> Vec<Event> {
    let (events, used) = feed(conn, bytes);
    if let Some(left) = bytes.get(used..)
        && !left.is_empty()
    {
        rest.extend_from_slice(left);
    }
    events
}

/// Feeds `bytes` to `conn` packet by packet (the core takes one packet per call; a partial
/// packet stays in its builder until the next read), up to [`FEED_PACKETS`] packets: the
/// session answers those (PUBACKs included) before the next ones are parsed, so a device
/// pipelining many QoS 1 publishes in one read is held to the receive maximum as if they
/// had come one by one. Stops at the first error: the rest would only be parsed to be thrown
/// away with the connection. Returns the events and how many bytes were taken.
pub(super) fn feed(conn: &mut Connection, bytes: &[u8]) -> (Vec<Event>, usize) {
    let mut cursor = mqtt::common::Cursor::new(bytes);
    let mut events = Vec::new();
    let mut packets = 0;
    loop {
        let before = cursor.position();
        if usize::try_from(before).map_or(true, |p| p >= bytes.len()) || packets >= FEED_PACKETS {
            break;
        }
        let new = conn.recv(&mut cursor);
        let failed = new
            .iter()
            .any(|e| matches!(e, Event::RequestClose | Event::NotifyError(_)));
        packets += new
            .iter()
            .filter(|e| matches!(e, Event::NotifyPacketReceived(_)))
            .count();
        events.extend(new);
        if failed || cursor.position() == before {
            break;
        }
    }
    let used = usize::try_from(cursor.position()).map_or(bytes.len(), |p| p.min(bytes.len()));
    (events, used)
}

/// A server-side protocol state accepting packets up to `max_packet_size` bytes and up to
/// `max_inflight` unacknowledged QoS 1 publishes from the device, version chosen by its
/// CONNECT. The core answers PINGREQ itself; PUBACKs are the session's (they carry its
/// reason codes).
pub(super) fn new_connection(max_packet_size: u32, max_inflight: u16) -> Connection {
    let options = ConnectionOptions::new()
        .maximum_packet_size_recv(max_packet_size)
        .receive_maximum(max_inflight);
    let mut conn = Connection::with_options(mqtt::Version::Undetermined, options);
    conn.set_auto_pub_response(false);
    conn.set_auto_ping_response(true);
    conn
}

/// The connection is over: the peer closed it, the socket failed, or the protocol core
/// asked to close (after a malformed or oversized packet, a keep-alive timeout, or a
/// DISCONNECT it queued).
#[derive(Debug)]
pub(super) struct Closed;

/// A connection: socket, protocol state, queued output and events not yet handled.
pub(super) struct Link {
    wire: Wire,
    conn: Connection,
    /// Serialized packets waiting to be written.
    out: Vec<u8>,
    /// Events of the last read not yet handled.
    pending: Option<std::vec::IntoIter<Event>>,
    /// Bytes read but not yet parsed (beyond one batch of packets); empty while waiting.
    rest: Vec<u8>,
    /// When the device's keep-alive runs out (1.5 × its keep-alive after its last packet).
    keep_alive: Option<Instant>,
    /// The core asked to close: write what is queued, then close.
    closing: bool,
    /// The socket failed: nothing more can be written.
    broken: bool,
}

impl Link {
    /// A link over `wire` with a fresh protocol state (see [`new_connection`]).
    pub(super) fn new(wire: Wire, max_packet_size: u32, max_inflight: u16) -> Self {
        Self {
            wire,
            conn: new_connection(max_packet_size, max_inflight),
            out: Vec::new(),
            pending: None,
            rest: Vec::new(),
            keep_alive: None,
            closing: false,
            broken: false,
        }
    }

    /// The protocol version the CONNECT chose.
    pub(super) fn version(&self) -> mqtt::Version {
        self.conn.get_protocol_version()
    }

    /// The next received packet among the events already read, handling the others
    /// (queueing packets to send, timers); `Ok(None)` when more bytes are needed.
    pub(super) fn next_pending(&mut self) -> Result<Option<Packet>, Closed> {
        if self.closing || self.broken {
            return Err(Closed);
        }
        loop {
            while let Some(event) = self.pending.as_mut().and_then(Iterator::next) {
                if let Some(packet) = self.apply(event)? {
                    return Ok(Some(packet));
                }
            }
            self.pending = None;
            if self.rest.is_empty() {
                return Ok(None);
            }
            let rest = std::mem::take(&mut self.rest);
            let events = feed_keeping_rest(&mut self.conn, &rest, &mut self.rest);
            self.pending = Some(events.into_iter());
        }
    }

    /// Waits for the next bytes, the keep-alive deadline or `other`, whichever comes first.
    /// Bytes and the deadline become events for [`Link::next_pending`]. Cancel-safe.
    ///
    /// Written with `poll_fn` over the socket's readiness rather than with read futures,
    /// so that waiting holds nothing but the keep-alive timer and `other`.
    pub(super) async fn fill_or<F: Future>(&mut self, other: F) -> Woke<F::Output> {
        let mut sleep = std::pin::pin!(self.keep_alive.map(tokio::time::sleep_until));
        let mut other = std::pin::pin!(other);
        std::future::poll_fn(|cx| {
            // Bytes first: a packet that arrived while the session was busy counts for the
            // keep-alive even if the deadline has passed since.
            if let Poll::Ready(r) = self.poll_read(cx) {
                return Poll::Ready(Woke::Link(r));
            }
            if let Some(deadline) = sleep.as_mut().as_pin_mut()
                && deadline.poll(cx).is_ready()
            {
                self.keep_alive = None;
                let events = self.conn.notify_timer_fired(TimerKind::PingreqRecv);
                self.pending = Some(events.into_iter());
                return Poll::Ready(Woke::Link(Ok(())));
            }
            other.as_mut().poll(cx).map(Woke::Other)
        })
        .await
    }

    /// Reads what the socket has and feeds it to the core.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Closed>> {
        let read = match &mut self.wire {
            Wire::Tcp(s) => loop {
                match s.poll_read_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => break Err(e),
                    Poll::Ready(Ok(())) => {}
                }
                match read_now(s, &mut self.conn, &mut self.rest) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    r => break r,
                }
            },
            Wire::Tls(s, buf) => {
                let mut filled = ReadBuf::new(buf);
                match Pin::new(&mut **s).poll_read(cx, &mut filled) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Ready(Ok(())) => {
                        let bytes = filled.filled();
                        Ok((!bytes.is_empty())
                            .then(|| feed_keeping_rest(&mut self.conn, bytes, &mut self.rest)))
                    }
                }
            }
        };
        Poll::Ready(if let Ok(Some(events)) = read {
            self.pending = Some(events.into_iter());
            Ok(())
        } else {
            self.broken = true;
            Err(Closed)
        })
    }

    /// Queues a packet through the protocol core (which assigns nothing and checks the
    /// packet against the connection's state and limits).
    pub(super) fn send<T>(&mut self, packet: T) -> Result<(), Closed>
    where
        T: mqtt::connection::Sendable<role::Server, u16>,
    {
        for event in self.conn.checked_send(packet) {
            if let Event::NotifyError(e) = event {
                tracing::debug!(error = ?e, "MQTT packet refused by the protocol state");
                self.closing = true;
            } else {
                self.apply(event)?;
            }
        }
        if self.closing {
            return Err(Closed);
        }
        Ok(())
    }

    /// How many more QoS 1 publishes the device's receive maximum allows now (`None`: no
    /// limit announced).
    pub(super) fn send_vacancy(&self) -> Option<u16> {
        self.conn.get_receive_maximum_vacancy_for_send()
    }

    /// A packet id for a QoS 1 publish.
    pub(super) fn acquire_packet_id(&mut self) -> Result<u16, Closed> {
        self.conn.acquire_packet_id().map_err(|_| Closed)
    }

    /// Handles one event; returns a received packet.
    fn apply(&mut self, event: Event) -> Result<Option<Packet>, Closed> {
        match event {
            Event::NotifyPacketReceived(p) => return Ok(Some(p)),
            Event::RequestSendPacket { packet, .. } => {
                for b in packet.to_buffers() {
                    self.out.extend_from_slice(&b);
                }
            }
            Event::RequestTimerReset {
                kind: TimerKind::PingreqRecv,
                duration_ms,
            } => {
                self.keep_alive = Some(Instant::now() + Duration::from_millis(duration_ms));
            }
            Event::RequestTimerCancel(TimerKind::PingreqRecv) => self.keep_alive = None,
            // A server never sends PINGREQ, so it sets no other timer.
            Event::RequestTimerReset { .. }
            | Event::RequestTimerCancel(_)
            | Event::NotifyPacketIdReleased(_) => {}
            Event::RequestClose => {
                self.closing = true;
                return Err(Closed);
            }
            Event::NotifyError(e) => {
                tracing::debug!(error = ?e, "MQTT protocol error; closing");
                self.closing = true;
                return Err(Closed);
            }
        }
        Ok(None)
    }

    /// Whether enough output is queued to write it before handling more packets.
    pub(super) fn should_flush(&self) -> bool {
        self.out.len() >= FLUSH_AT
    }

    /// Writes the queued packets and releases the buffer. A plain TCP socket is written
    /// synchronously while it accepts bytes; only the rest (a full socket buffer, or TLS)
    /// is awaited, in a boxed future, so this future stays small in the session's state.
    pub(super) async fn flush(&mut self) -> Result<(), Closed> {
        if self.broken {
            return Err(Closed);
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let mut written = 0;
        if let Wire::Tcp(s) = &self.wire {
            while written < out.len() {
                match s.try_write(&out[written..]) {
                    Ok(0) => {
                        self.broken = true;
                        return Err(Closed);
                    }
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.broken = true;
                        return Err(Closed);
                    }
                }
            }
        }
        if written < out.len()
            && Box::pin(self.wire.write_all(&out[written..]))
                .await
                .is_err()
        {
            self.broken = true;
            return Err(Closed);
        }
        Ok(())
    }

    /// Writes what is queued (unless the socket failed) and closes the connection.
    pub(super) async fn close(&mut self) {
        // Packets the core queued with its own decision to close (an MQTT 5 DISCONNECT after
        // a protocol error) may sit behind events the session never reached.
        for event in self.pending.take().into_iter().flatten() {
            if let Event::RequestSendPacket { packet, .. } = event {
                for b in packet.to_buffers() {
                    self.out.extend_from_slice(&b);
                }
            }
        }
        if !self.broken && self.flush().await.is_ok() {
            self.wire.shutdown().await;
        }
    }
}
