//! A buffered full-duplex stream: `BufReader` and `BufWriter` over one `Read + Write`
//! (the std ones each own the stream). A capacity of 0 passes every call through. The
//! wire protocol flushes before every read that waits on the peer, so buffered writes
//! never deadlock.

use std::io::{Read, Write};

#[derive(Debug)]
pub struct Duplex<S> {
    pub inner: S,
    cap: usize,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
}

impl<S: Read + Write> Duplex<S> {
    pub fn new(inner: S, cap: usize) -> Self {
        Self {
            inner,
            cap,
            wbuf: Vec::with_capacity(cap),
            rbuf: vec![0; cap],
            rpos: 0,
            rend: 0,
        }
    }

    fn flush_buf(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.inner.write_all(&self.wbuf)?;
            self.wbuf.clear();
        }
        Ok(())
    }
}

impl<S: Read + Write> Read for Duplex<S> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.rpos >= self.rend {
            // Large reads bypass the buffer (as BufReader does).
            if out.len() >= self.cap {
                return self.inner.read(out);
            }
            self.rend = self.inner.read(&mut self.rbuf)?;
            self.rpos = 0;
        }
        let have = self.rbuf.get(self.rpos..self.rend).unwrap_or_default();
        let n = have.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), have.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.rpos += n;
        Ok(n)
    }
}

impl<S: Read + Write> Write for Duplex<S> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.wbuf.len() + data.len() > self.cap {
            self.flush_buf()?;
        }
        if data.len() >= self.cap {
            return self.inner.write(data);
        }
        self.wbuf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_buf()?;
        self.inner.flush()
    }
}

impl<S: custody_mover::wire::Exporter> custody_mover::wire::Exporter for Duplex<S> {
    fn bulk_token(&self, ticket_id: &[u8; 16]) -> Result<[u8; 32], custody_mover::MoverError> {
        self.inner.bulk_token(ticket_id)
    }
}
