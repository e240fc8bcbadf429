//! A TCP proxy in front of rowcast, as a load balancer would be: clients connect to the
//! proxy; switching its target cuts every connection, and the clients reconnect — to the
//! other replica.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    target: Arc<Mutex<(SocketAddr, CancellationToken)>>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new((target, CancellationToken::new())));
        let stop = CancellationToken::new();
        let (t, s) = (target.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = s.cancelled() => return,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                let (to, cut) = t.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        });
        Proxy { addr, target, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on connections go to `to`; the open ones are cut.
    pub fn switch(&self, to: SocketAddr) {
        let mut t = self.target.lock().unwrap();
        t.1.cancel();
        *t = (to, CancellationToken::new());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.target.lock().unwrap().1.cancel();
    }
}
