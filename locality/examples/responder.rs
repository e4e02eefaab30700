//! A stand-alone locality responder for tests: a fresh Ed25519 key (like an agent's
//! per-boot session key), its public key as hex on the first stdout line, the bound
//! address on the second, then answers challenges on ADDR until killed.
//!
//! `responder 10.0.0.1:7000`

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use custody_locality::net::{serve, Signer};
use std::io::Write;
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).ok_or("usage: responder ADDR (ip:port)")?;
    let key = Arc::new(Ed25519KeyPair::generate().map_err(|_| "key generation failed")?);
    let public: [u8; 32] = key.public_key().as_ref().try_into()?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", hex::encode(public))?;
    writeln!(out, "{}", listener.local_addr()?)?;
    out.flush()?;
    drop(out);
    let signer: Signer = Arc::new(move |msg: &[u8]| {
        let mut sig = [0u8; 64];
        sig.copy_from_slice(key.sign(msg).as_ref());
        sig
    });
    serve(listener, signer, public, std::future::pending()).await;
    Ok(())
}
