//! A TCP proxy in front of ClickHouse that a test can take down (every connection cut,
//! new ones refused) and bring back, or arm to cut the next connection after a number
//! of client bytes (an INSERT cut mid-way), or to stall one (the client's side cut,
//! the server's left open as a half-open peer would), or to hold what clients send for
//! a while (a slow way to the server). Lets a test "stop ClickHouse" (or slow NATS)
//! without touching the server the other tests use.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The proxy's shared state.
#[derive(Default)]
struct State {
    /// Refuse and cut everything while set.
    down: AtomicBool,
    /// Cut a connection once it has sent this many more client bytes (0: off).
    cut_after_bytes: AtomicU64,
    /// Connections cut by `cut_after_bytes`.
    cuts: AtomicU64,
    /// Whether the next `cut_after_bytes` cut leaves the server's side open.
    stall: AtomicBool,
    /// Each read from a client waits this many ms before it goes on (0: none).
    client_delay_ms: AtomicU64,
    /// Server sides a stall left open, until `release`.
    stalled: Mutex<Vec<TcpStream>>,
    /// Live sockets, to cut on `down`.
    sockets: Mutex<Vec<TcpStream>>,
    /// Set on drop: the accept loop ends.
    closed: AtomicBool,
}

/// A running proxy; stopped on drop.
pub struct Proxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(State::default());
        let shared = state.clone();
        std::thread::spawn(move || {
            while !shared.closed.load(Ordering::Acquire) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                if shared.down.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                pump(&shared, client, server);
            }
        });
        Proxy { port, state }
    }

    /// Cuts every connection and refuses new ones, as a dead server would.
    pub fn down(&self) {
        self.state.down.store(true, Ordering::Release);
        for socket in self.state.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Accepts connections again.
    pub fn up(&self) {
        self.state.down.store(false, Ordering::Release);
    }

    /// Cuts the next connection to send `bytes` more client bytes, once.
    pub fn cut_after(&self, bytes: u64) {
        self.state.cut_after_bytes.store(bytes, Ordering::Release);
    }

    /// Like [`Self::cut_after`], but only the client's side is cut: the server keeps
    /// a connection that sends nothing more (a half-open peer) until [`Self::release`].
    pub fn stall_after(&self, bytes: u64) {
        self.state.stall.store(true, Ordering::Release);
        self.cut_after(bytes);
    }

    /// Closes the server sides that stalls left open.
    pub fn release(&self) {
        for socket in self.state.stalled.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Holds what clients send for `delay` before passing it on: the server sees each
    /// request that much later than the client sent it.
    pub fn delay_client(&self, delay: Duration) {
        let ms = delay.as_millis().try_into().unwrap_or(u64::MAX);
        self.state.client_delay_ms.store(ms, Ordering::Release);
    }

    /// Connections cut by `cut_after`.
    pub fn cuts(&self) -> u64 {
        self.state.cuts.load(Ordering::Acquire)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::Release);
        self.down();
        self.release();
    }
}

/// Copies both ways on two threads; the client side counts bytes for `cut_after`.
fn pump(state: &Arc<State>, client: TcpStream, server: TcpStream) {
    {
        let mut sockets = state.sockets.lock().unwrap();
        sockets.push(client.try_clone().unwrap());
        sockets.push(server.try_clone().unwrap());
    }
    let (mut client_read, mut server_write) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (mut server_read, mut client_write) = (server, client);
    let up = state.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        let mut sent = 0u64;
        loop {
            let n = match client_read.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            sent += n as u64;
            let delay = up.client_delay_ms.load(Ordering::Acquire);
            if delay > 0 {
                std::thread::sleep(Duration::from_millis(delay));
            }
            let cut = up.cut_after_bytes.load(Ordering::Acquire);
            if cut > 0 && sent >= cut {
                // Forward only part of this read, then cut both sides mid-stream.
                let keep = n - (sent - cut) as usize;
                let _ = server_write.write_all(&buffer[..keep]);
                up.cut_after_bytes.store(0, Ordering::Release);
                up.cuts.fetch_add(1, Ordering::AcqRel);
                let _ = client_read.shutdown(Shutdown::Both);
                if up.stall.swap(false, Ordering::AcqRel) {
                    up.stalled.lock().unwrap().push(server_write);
                    return;
                }
                let _ = server_write.shutdown(Shutdown::Both);
                break;
            }
            if server_write.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = server_write.shutdown(Shutdown::Both);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut server_read, &mut client_write);
        let _ = client_write.shutdown(Shutdown::Both);
    });
}
