//! `rkt-udp-echo PORT REPLY`: answers every UDP datagram that arrives on 0.0.0.0:PORT with
//! REPLY and a newline, forever. The guest image's busybox has no UDP server; the pod network
//! tests use this one to check that `--port` forwards UDP.

use std::net::UdpSocket;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(reply)) = (args.get(1).and_then(|p| p.parse::<u16>().ok()), args.get(2))
    else {
        eprintln!("usage: rkt-udp-echo PORT REPLY");
        std::process::exit(2);
    };
    let socket = match UdpSocket::bind(("0.0.0.0", port)) {
        Ok(socket) => socket,
        Err(err) => {
            eprintln!("rkt-udp-echo: cannot bind UDP port {port}: {err}");
            std::process::exit(1);
        }
    };
    let answer = format!("{reply}\n");
    let mut buffer = [0u8; 2048];
    loop {
        if let Ok((_, peer)) = socket.recv_from(&mut buffer) {
            let _ = socket.send_to(answer.as_bytes(), peer);
        }
    }
}
