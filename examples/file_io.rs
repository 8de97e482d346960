//! Copies a file through `ringshard::fs` with positional, owned-buffer
//! reads and writes (several in flight), printing progress, then verifies
//! the copy byte for byte.
//!
//! ```text
//! cargo run --release --example file_io -- SOURCE DEST
//! cargo run --release --example file_io            # makes a 64 MiB test file first
//! ```

use std::cell::Cell;
use std::io::{self, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use ringshard::fs::{File, OpenOptions};

const CHUNK: usize = 1 << 20;
const IN_FLIGHT: usize = 8;

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (source, dest, made) = match args.as_slice() {
        [source, dest] => (PathBuf::from(source), PathBuf::from(dest), false),
        [] => {
            let dir = std::env::temp_dir();
            let source = dir.join(format!("ringshard-file-io-{}.src", std::process::id()));
            let data: Vec<u8> = (0..64u64 << 20).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&source, data)?;
            let dest = dir.join(format!("ringshard-file-io-{}.dst", std::process::id()));
            (source, dest, true)
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "usage: file_io [SOURCE DEST]",
            ))
        }
    };
    let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
    let result = rt.block_on(copy_and_verify(source.clone(), dest.clone()));
    if made {
        let _ = std::fs::remove_file(&source);
        let _ = std::fs::remove_file(&dest);
    }
    result
}

async fn copy_and_verify(source: PathBuf, dest: PathBuf) -> io::Result<()> {
    let started = Instant::now();
    let input = Rc::new(File::open(&source).await?);
    let len = input.metadata().await?.len();
    let output = Rc::new(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&dest)
            .await?,
    );
    output.set_len(len).await?;
    let next = Rc::new(Cell::new(0u64));
    let copied = Rc::new(Cell::new(0u64));
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (input, output, next, copied) =
                (input.clone(), output.clone(), next.clone(), copied.clone());
            ringshard::spawn(async move {
                let mut buf = Vec::with_capacity(CHUNK);
                loop {
                    let pos = next.get();
                    if pos >= len {
                        return Ok::<_, io::Error>(());
                    }
                    next.set(pos + CHUNK as u64);
                    // The whole chunk (the last one is shorter): a short read
                    // must not leave a hole in the copy.
                    let want = CHUNK.min((len - pos) as usize);
                    if buf.capacity() != want {
                        buf = Vec::with_capacity(want);
                    }
                    let (res, back) = input.read_exact_at(buf, pos).await;
                    let n = res?;
                    let (res, back) = output.write_all_at(back, pos).await;
                    res?;
                    copied.set(copied.get() + n as u64);
                    print!("\rcopied {} of {} MiB", copied.get() >> 20, len >> 20);
                    let _ = io::stdout().flush();
                    buf = back;
                    buf.clear();
                }
            })
        })
        .collect();
    for worker in workers {
        worker
            .await
            .map_err(|error| io::Error::other(error.to_string()))??;
    }
    output.sync_all().await?;
    let took = started.elapsed();
    println!(
        "\rcopied {} bytes in {took:.2?} ({:.0} MiB/s)",
        len,
        len as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
    // Verify, chunk by chunk.
    let copy = File::open(&dest).await?;
    let mut pos = 0;
    while pos < len {
        let want = CHUNK.min((len - pos) as usize);
        let (a, left) = input.read_exact_at(Vec::with_capacity(want), pos).await;
        a?;
        let (b, right) = copy.read_exact_at(Vec::with_capacity(want), pos).await;
        b?;
        if left != right {
            return Err(io::Error::other(format!(
                "the copy differs in the MiB at {pos}"
            )));
        }
        pos += want as u64;
    }
    println!("verified: {} bytes identical", len);
    Ok(())
}
