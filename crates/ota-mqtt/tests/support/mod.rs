//! Helpers of the device-client tests: a cutting TCP proxy, a raw MQTT probe, state polling.
#![allow(dead_code, clippy::missing_panics_doc)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ota_server::model::{DeviceId, PackageType, UpdateState};
use ota_server::service::Ota;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A TCP proxy in front of `target`. The first connection is cut once `cut_after` bytes went
/// from the server to the client; with `refuse_later`, later connections are closed at once,
/// otherwise they are relayed untouched.
pub struct CutProxy {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
}

impl CutProxy {
    pub async fn start(target: SocketAddr, cut_after: usize, refuse_later: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                if n > 0 && refuse_later {
                    drop(client);
                    continue;
                }
                let limit = if n == 0 { Some(cut_after) } else { None };
                tokio::spawn(relay(client, target, limit));
            }
        });
        Self { addr, accepted }
    }
}

async fn relay(client: TcpStream, target: SocketAddr, limit: Option<usize>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
    });
    let mut sent = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match limit {
            Some(l) if sent + n >= l => {
                let _ = cw.write_all(&buf[..l - sent]).await;
                break;
            }
            _ => n,
        };
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
        sent += n;
    }
    // Cut: both directions end, as on a lost link.
    up.abort();
}

/// What a probe saw.
#[derive(Debug)]
pub enum Seen {
    Connected,
    Publish(String, Vec<u8>),
    Closed(String),
}

/// A bare rumqttc session (no reconnection) with its events in a channel.
pub struct Probe {
    pub client: AsyncClient,
    pub events: mpsc::UnboundedReceiver<Seen>,
}

impl Probe {
    pub async fn connect(addr: SocketAddr, token: &str, client_id: &str) -> Self {
        let mut o = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        o.set_credentials(token, "");
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 4096);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = tx.send(Seen::Connected);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Seen::Publish(p.topic, p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        while let Some(ev) = el.state.events.pop_front() {
                            if let Event::Incoming(Packet::Publish(p)) = ev {
                                let _ = tx.send(Seen::Publish(p.topic, p.payload.to_vec()));
                            }
                        }
                        let _ = tx.send(Seen::Closed(e.to_string()));
                        break;
                    }
                }
            }
        });
        let mut p = Self { client, events };
        match p.next(Duration::from_secs(10)).await {
            Some(Seen::Connected) => p,
            other => panic!("probe {client_id} did not connect: {other:?}"),
        }
    }

    pub async fn next(&mut self, wait: Duration) -> Option<Seen> {
        tokio::time::timeout(wait, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Everything seen within `wait`.
    pub async fn drain(&mut self, wait: Duration) -> Vec<Seen> {
        let until = tokio::time::Instant::now() + wait;
        let mut all = Vec::new();
        while let Ok(Some(s)) = tokio::time::timeout_at(until, self.events.recv()).await {
            all.push(s);
        }
        all
    }

    /// Waits for the connection to end; the reason, or `None` if it stayed up for `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> Option<String> {
        let until = tokio::time::Instant::now() + wait;
        while let Ok(Some(s)) = tokio::time::timeout_at(until, self.events.recv()).await {
            if let Seen::Closed(why) = s {
                return Some(why);
            }
        }
        None
    }

    pub async fn publish(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .expect("queue publish");
    }
}

/// A raw MQTT 3.1.1 CONNECT with `token` as user name.
pub fn raw_connect(client_id: &str, token: &str) -> Vec<u8> {
    let mut var = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x82, 0, 60];
    for s in [client_id, token] {
        var.extend_from_slice(&u16::try_from(s.len()).expect("short").to_be_bytes());
        var.extend_from_slice(s.as_bytes());
    }
    let mut p = vec![0x10];
    p.extend(remaining_length(var.len()));
    p.extend(var);
    p
}

/// MQTT's variable-length "remaining length".
pub fn remaining_length(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = u8::try_from(n % 128).expect("7 bits");
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

/// Waits until the server has stored `want` as the device's firmware state.
pub async fn wait_state(ota: &Ota, device: DeviceId, want: UpdateState) {
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let state = ota
            .store()
            .update_state(device, PackageType::Firmware)
            .await
            .expect("state");
        if state.state == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "state stayed {:?}, wanted {want:?}",
            state.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How often each chunk index was read by the server.
pub fn reads_per_index(reads: &[(u64, u64)], chunks: u64) -> Vec<usize> {
    let mut counts = vec![0usize; usize::try_from(chunks).expect("fits")];
    for &(i, _) in reads {
        if let Some(c) = counts.get_mut(usize::try_from(i).expect("fits")) {
            *c += 1;
        }
    }
    counts
}
