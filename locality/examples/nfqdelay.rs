//! A path delay in the kernel for kernels without `sch_netem`: every packet netfilter
//! hands to NFQUEUE queue `QUEUE` is held for `DELAY_MS` and then let through, in order.
//! With, inside a network namespace,
//!
//! ```text
//! iptables -A OUTPUT -o IFACE -j NFQUEUE --queue-num QUEUE
//! ```
//!
//! every packet leaving IFACE (handshake, data and ACKs alike) waits in the kernel's queue,
//! as behind `tc qdisc add dev IFACE root netem delay DELAY_MS`. The endpoints see a longer
//! path and nothing else: the connection is theirs, end to end, with no relay in it. Only
//! the verdict is given from user space, so the delay is this process's timer, to within
//! the scheduler's wake-up latency: never shorter than asked, and longer by what it takes
//! a thread to wake on a loaded machine.
//!
//! `nfqdelay QUEUE DELAY_MS`: binds the queue, prints `ready`, then serves until killed.
//!
//! It speaks nfnetlink_queue (linux/netfilter/nfnetlink_queue.h) over a netlink socket,
//! asking for packet metadata only (NFQNL_COPY_META): the packet id is all a verdict needs.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

const AF_NETLINK: i32 = 16;
const NETLINK_NETFILTER: i32 = 12;
const AF_INET: u16 = 2;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// nfnetlink subsystem 3 (NFNL_SUBSYS_QUEUE) in the high byte of the message type.
const NFQNL_MSG_PACKET: u16 = 3 << 8;
const NFQNL_MSG_VERDICT: u16 = (3 << 8) | 1;
const NFQNL_MSG_CONFIG: u16 = (3 << 8) | 2;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_PF_BIND: u8 = 3;
const NFQNL_CFG_CMD_PF_UNBIND: u8 = 4;
const NFQNL_COPY_META: u8 = 1;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NF_ACCEPT: u32 = 1;
/// The attribute type's top two bits are flags (nested, network byte order).
const NLA_TYPE_MASK: u16 = 0x3fff;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [queue, delay] = args.as_slice() else {
        return Err("usage: nfqdelay QUEUE DELAY_MS".into());
    };
    let queue: u16 = queue.parse()?;
    let delay = Duration::from_millis(delay.parse()?);

    let mut sock = Socket::new(
        Domain::from(AF_NETLINK),
        Type::DGRAM, // netlink treats SOCK_DGRAM and SOCK_RAW alike
        Some(Protocol::from(NETLINK_NETFILTER)),
    )?;
    // An unconnected netlink socket sends to the kernel and binds itself on first use.
    let mut seq = 0u32;
    // Older kernels want the protocol family (un)bound first; newer ones ignore both.
    for (cmd, pf) in [
        (NFQNL_CFG_CMD_PF_UNBIND, AF_INET),
        (NFQNL_CFG_CMD_PF_BIND, AF_INET),
    ] {
        seq += 1;
        sock.write_all(&config_cmd(seq, 0, cmd, pf))?;
        let _ = ack(&mut sock, seq);
    }
    seq += 1;
    sock.write_all(&config_cmd(seq, queue, NFQNL_CFG_CMD_BIND, 0))?;
    ack(&mut sock, seq).map_err(|e| format!("binding NFQUEUE {queue}: {e}"))?;
    seq += 1;
    sock.write_all(&config_params(seq, queue, NFQNL_COPY_META))?;
    ack(&mut sock, seq).map_err(|e| format!("setting copy mode: {e}"))?;

    let mut out = io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);

    // Packets go to a releaser thread with their release time, in arrival order: one
    // delay for all keeps the order, and verdicts keep the order the packets came in. The
    // releaser sleeps with `thread::sleep` (a high-resolution timer), not a socket
    // timeout, which the kernel rounds up to its tick (4 ms at HZ=250).
    let (tx, rx) = std::sync::mpsc::channel::<(u32, Instant)>();
    let mut releaser = sock.try_clone()?;
    std::thread::spawn(move || -> io::Result<()> {
        for (id, due) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            releaser.write_all(&accept(queue, id))?;
        }
        Ok(())
    });
    sock.set_read_timeout(None)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = sock.read(&mut buf)?;
        let arrived = Instant::now();
        for msg in messages(buf.get(..n).unwrap_or_default()) {
            if msg.kind == NFQNL_MSG_PACKET {
                if let Some(id) = packet_id(msg.payload) {
                    tx.send((id, arrived + delay))
                        .map_err(|_| "the releaser thread stopped")?;
                }
            }
        }
    }
}

/// A netlink message as read: its type and what follows its 16-byte header.
struct Message<'a> {
    kind: u16,
    payload: &'a [u8],
}

/// The messages in one datagram; stops at the first malformed header.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        let header = buf.get(..NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes(header.get(0..4)?.try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(header.get(4..6)?.try_into().ok()?);
        let payload = buf.get(NLMSG_HDRLEN..len)?;
        buf = buf.get(align4(len)..).unwrap_or_default();
        Some(Message { kind, payload })
    })
}

/// The packet id of an NFQNL_MSG_PACKET payload (nfgenmsg, then attributes).
fn packet_id(payload: &[u8]) -> Option<u32> {
    let mut attrs = payload.get(NFGENMSG_LEN..)?;
    while let Some(head) = attrs.get(..4) {
        let len = usize::from(u16::from_ne_bytes(head.get(0..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(head.get(2..4)?.try_into().ok()?) & NLA_TYPE_MASK;
        let value = attrs.get(4..len)?;
        if kind == NFQA_PACKET_HDR {
            // struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; }
            return Some(u32::from_be_bytes(value.get(0..4)?.try_into().ok()?));
        }
        attrs = attrs.get(align4(len)..)?;
    }
    None
}

/// Waits for the kernel's answer to request `seq`: Ok for an ACK, the errno otherwise.
fn ack(sock: &mut Socket, seq: u32) -> Result<(), String> {
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 8192];
    loop {
        let n = sock
            .read(&mut buf)
            .map_err(|e| format!("no answer from the kernel: {e}"))?;
        for msg in messages(buf.get(..n).unwrap_or_default()) {
            if msg.kind != NLMSG_ERROR {
                continue;
            }
            // struct nlmsgerr { int error; struct nlmsghdr msg; }: 0 is an ACK.
            let error = i32::from_ne_bytes(
                msg.payload
                    .get(0..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("short netlink error message")?,
            );
            let for_seq = msg
                .payload
                .get(12..16)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes);
            if for_seq != Some(seq) {
                continue;
            }
            return match error {
                0 => Ok(()),
                e => Err(io::Error::from_raw_os_error(-e).to_string()),
            };
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One nfnetlink message: header, nfgenmsg (family, version 0, resource id = the queue)
/// and one attribute.
fn nfq_message(kind: u16, flags: u16, seq: u32, family: u8, queue: u16, attr: u16, value: &[u8]) -> Vec<u8> {
    let attr_len = 4 + value.len();
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + align4(attr_len);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    m.extend_from_slice(&[family, 0]);
    m.extend_from_slice(&queue.to_be_bytes());
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&attr.to_ne_bytes());
    m.extend_from_slice(value);
    m.resize(len, 0);
    m
}

fn config_cmd(seq: u32, queue: u16, cmd: u8, pf: u16) -> Vec<u8> {
    // struct nfqnl_msg_config_cmd { __u8 command; __u8 _pad; __be16 pf; }
    let mut v = vec![cmd, 0];
    v.extend_from_slice(&pf.to_be_bytes());
    nfq_message(
        NFQNL_MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        queue,
        NFQA_CFG_CMD,
        &v,
    )
}

fn config_params(seq: u32, queue: u16, mode: u8) -> Vec<u8> {
    // struct nfqnl_msg_config_params { __be32 copy_range; __u8 copy_mode; } (packed)
    let mut v = 0u32.to_be_bytes().to_vec();
    v.push(mode);
    nfq_message(
        NFQNL_MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        queue,
        NFQA_CFG_PARAMS,
        &v,
    )
}

/// The verdict that lets packet `id` through.
fn accept(queue: u16, id: u32) -> Vec<u8> {
    // struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }
    let mut v = NF_ACCEPT.to_be_bytes().to_vec();
    v.extend_from_slice(&id.to_be_bytes());
    nfq_message(
        NFQNL_MSG_VERDICT,
        NLM_F_REQUEST,
        0,
        0,
        queue,
        NFQA_VERDICT_HDR,
        &v,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verdict laid out as linux/netfilter/nfnetlink_queue.h says, byte for byte
    /// (x86-64: host order is little-endian).
    #[test]
    #[cfg(target_endian = "little")]
    fn verdict_bytes() {
        let m = accept(7, 0x0102_0304);
        assert_eq!(
            m,
            [
                32, 0, 0, 0, // nlmsg_len
                0x01, 0x03, // NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_VERDICT
                0x01, 0x00, // NLM_F_REQUEST
                0, 0, 0, 0, 0, 0, 0, 0, // seq, pid
                0, 0, 0, 7, // nfgenmsg: AF_UNSPEC, version 0, queue 7 (big-endian)
                12, 0, 2, 0, // nlattr: len 12, NFQA_VERDICT_HDR
                0, 0, 0, 1, 1, 2, 3, 4, // NF_ACCEPT, packet id (big-endian)
            ]
        );
    }

    #[test]
    fn packet_ids_are_read_and_bad_lengths_are_not() {
        // A packet message as the kernel sends it: a first attribute to skip (3 bytes of
        // value, padded), then the packet header.
        let mut payload = vec![2, 0, 0, 0];
        payload.extend_from_slice(&7u16.to_ne_bytes());
        payload.extend_from_slice(&9u16.to_ne_bytes());
        payload.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0]);
        payload.extend_from_slice(&11u16.to_ne_bytes());
        payload.extend_from_slice(&NFQA_PACKET_HDR.to_ne_bytes());
        payload.extend_from_slice(&[0, 0, 0x12, 0x34, 0x08, 0x00, 3, 0]);
        let mut datagram = ((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes().to_vec();
        datagram.extend_from_slice(&NFQNL_MSG_PACKET.to_ne_bytes());
        datagram.extend_from_slice(&[0; 10]);
        datagram.extend_from_slice(&payload);
        let msgs: Vec<_> = messages(&datagram).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].kind, NFQNL_MSG_PACKET);
        assert_eq!(packet_id(msgs[0].payload), Some(0x1234));

        // Truncations and lengths that point past the end yield nothing, never a panic.
        for cut in 0..datagram.len() {
            for m in messages(&datagram[..cut]) {
                let _ = packet_id(m.payload);
            }
        }
        let mut long = datagram.clone();
        long[0] = 0xff;
        assert_eq!(messages(&long).count(), 0);
        assert_eq!(packet_id(&[2, 0, 0, 0, 0xff, 0, 1, 0]), None);
    }
}
