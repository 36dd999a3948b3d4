//! `uefi/async`: BlockIo2 requests in flight at once, completed from the
//! driver's tick.

use super::*;

/// First block `uefi/async` writes (past the FAT partition, which ends at
/// block 72048 of xtask's image); the host checks it after the run.
pub(crate) const ASYNC_LBA: u64 = 80_000;

/// Requests in flight at once in `uefi/async`, and bytes of each.
pub(crate) const ASYNC_REQUESTS: usize = 8;

pub(crate) const ASYNC_BYTES: usize = 1 << 20;

/// Pattern seed of what `uefi/async` writes (the host's `fsimage::pattern`,
/// over all requests as one run of bytes).
pub(crate) const ASYNC_SEED: u32 = 5;

/// Issues one BlockIo2 request per buffer (all in flight at once), at
/// consecutive ranges from [`ASYNC_LBA`].
pub(crate) fn issue_requests(
    io2: *mut BlockIo2Protocol,
    write: bool,
    buffers: &[NonNull<u8>],
    tokens: &mut [BlockIo2Token],
) -> Outcome {
    // SAFETY: our BlockIo2 instance and its media.
    let media = unsafe { &*(*io2).media };
    let blocks = (ASYNC_BYTES / media.block_size as usize) as u64;
    for (i, (buffer, token)) in buffers.iter().zip(tokens.iter_mut()).enumerate() {
        token.transaction_status = Status::NOT_READY;
        let lba = ASYNC_LBA + i as u64 * blocks;
        // SAFETY: the buffer and token stay ours (untouched) until the
        // token's event is signalled, which the caller waits for.
        let s = unsafe {
            if write {
                ((*io2).write_blocks_ex)(
                    io2,
                    media.media_id,
                    lba,
                    token,
                    ASYNC_BYTES,
                    buffer.as_ptr().cast(),
                )
            } else {
                ((*io2).read_blocks_ex)(
                    io2,
                    media.media_id,
                    lba,
                    token,
                    ASYNC_BYTES,
                    buffer.as_ptr().cast(),
                )
            }
        };
        if !s.is_success() {
            return Err(format!("request {i}: {s:?}"));
        }
    }
    Ok(())
}

/// Waits up to 20 s for every token's event; returns how many were still
/// pending at the first look.
pub(crate) fn wait_requests(tokens: &[BlockIo2Token]) -> Result<usize, String> {
    let mut done = [false; ASYNC_REQUESTS];
    let check = |token: &BlockIo2Token| {
        // SAFETY: the caller's event; CheckEvent only reads and clears its
        // signalled state.
        unsafe { (efi::boot().check_event)(token.event) }.is_success()
    };
    for (i, token) in tokens.iter().enumerate() {
        done[i] = check(token);
    }
    let pending = done.iter().filter(|d| !**d).count();
    let deadline = clock::now() + core::time::Duration::from_secs(20);
    while done.iter().any(|d| !*d) {
        if clock::now() > deadline {
            let left = done.iter().filter(|d| !**d).count();
            return Err(format!(
                "{left} BlockIo2 requests not completed within 20 s"
            ));
        }
        for (i, token) in tokens.iter().enumerate() {
            if !done[i] {
                done[i] = check(token);
            }
        }
    }
    Ok(pending)
}

/// Issues the requests and waits for them all to succeed; returns how many
/// were still pending when the last was issued.
pub(crate) fn run_requests(
    io2: *mut BlockIo2Protocol,
    write: bool,
    buffers: &[NonNull<u8>],
    tokens: &mut [BlockIo2Token],
) -> Result<usize, String> {
    issue_requests(io2, write, buffers, tokens)?;
    let pending = wait_requests(tokens)?;
    if let Some((i, t)) = tokens
        .iter()
        .enumerate()
        .find(|(_, t)| t.transaction_status.is_error())
    {
        return Err(format!(
            "request {i} completed with {:?}",
            t.transaction_status
        ));
    }
    Ok(pending)
}

/// [`ASYNC_REQUESTS`] buffers of [`ASYNC_BYTES`] (pages) and tokens with
/// plain events (no notification: the driver signals them).
pub(crate) fn request_buffers() -> Result<(Vec<NonNull<u8>>, Vec<BlockIo2Token>), String> {
    let mut buffers = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..ASYNC_REQUESTS {
        let buffer = boot::allocate_pages(
            boot::AllocateType::AnyPages,
            boot::MemoryType::LOADER_DATA,
            ASYNC_BYTES / 4096,
        )
        .map_err(|e| format!("AllocatePages: {e:?}"))?;
        buffers.push(buffer);
        let mut event = ptr::null_mut();
        // SAFETY: a plain event that the driver signals.
        let s = unsafe {
            (efi::boot().create_event)(
                uefi_raw::table::boot::EventType::empty(),
                uefi_raw::table::boot::Tpl::CALLBACK,
                None,
                ptr::null_mut(),
                &mut event,
            )
        };
        if !s.is_success() {
            return Err(format!("CreateEvent: {s:?}"));
        }
        tokens.push(BlockIo2Token {
            event,
            transaction_status: Status::SUCCESS,
        });
    }
    Ok((buffers, tokens))
}

/// `uefi/async`: eight 1 MiB BlockIo2 writes in flight at once past the
/// file system, completed from the driver's tick, then eight reads of the
/// same blocks; the bytes read are the bytes written, a synchronous
/// BlockIo read agrees, and the host checks the image after the run.
pub(crate) fn asynchronous() -> Outcome {
    let driver = load_driver()?;
    let functions = hand_over(driver)?;
    let (io2, io) = our_namespace()?;
    let (buffers, mut tokens) = request_buffers()?;
    for (i, buffer) in buffers.iter().enumerate() {
        // SAFETY: the pages just allocated, ours.
        let bytes = unsafe { core::slice::from_raw_parts_mut(buffer.as_ptr(), ASYNC_BYTES) };
        for (j, b) in bytes.iter_mut().enumerate() {
            *b = pattern_byte((i * ASYNC_BYTES + j) as u64, ASYNC_SEED);
        }
    }
    let start = clock::now();
    let pending_writes = run_requests(io2, true, &buffers, &mut tokens)?;
    let write_us = (clock::now() - start).as_micros().max(1);
    // SAFETY: our BlockIo2; no token: a synchronous flush.
    let s = unsafe { ((*io2).flush_blocks_ex)(io2, ptr::null_mut()) };
    if !s.is_success() {
        return Err(format!("FlushBlocksEx: {s:?}"));
    }
    for buffer in &buffers {
        // SAFETY: our pages; no request is in flight.
        unsafe { ptr::write_bytes(buffer.as_ptr(), 0, ASYNC_BYTES) };
    }
    let start = clock::now();
    let pending_reads = run_requests(io2, false, &buffers, &mut tokens)?;
    let read_us = (clock::now() - start).as_micros().max(1);
    for (i, buffer) in buffers.iter().enumerate() {
        // SAFETY: our pages; every request completed.
        let bytes = unsafe { core::slice::from_raw_parts(buffer.as_ptr(), ASYNC_BYTES) };
        if let Some(at) = bytes
            .iter()
            .enumerate()
            .position(|(j, &b)| b != pattern_byte((i * ASYNC_BYTES + j) as u64, ASYNC_SEED))
        {
            return Err(format!("request {i}: byte {at} read back differently"));
        }
    }
    // The last request's blocks once more through BlockIo (synchronous).
    let mut check = vec![0u8; ASYNC_BYTES];
    // SAFETY: our BlockIo and its media; `check` holds the bytes asked.
    let s = unsafe {
        let media = &*(*io).media;
        let lba =
            ASYNC_LBA + ((ASYNC_REQUESTS - 1) * ASYNC_BYTES / media.block_size as usize) as u64;
        ((*io).read_blocks)(
            io,
            media.media_id,
            lba,
            ASYNC_BYTES,
            check.as_mut_ptr().cast(),
        )
    };
    // SAFETY: our pages, holding what the last async read brought.
    let last =
        unsafe { core::slice::from_raw_parts(buffers[ASYNC_REQUESTS - 1].as_ptr(), ASYNC_BYTES) };
    if !s.is_success() || check != last {
        return Err(format!("BlockIo disagrees with BlockIo2 ({s:?})"));
    }
    let mib = (ASYNC_REQUESTS * ASYNC_BYTES) >> 20;
    say!(
        "uefi: {ASYNC_REQUESTS} x 1 MiB BlockIo2 writes in {write_us} us ({} MiB/s), reads in {read_us} us ({} MiB/s); pending when the last was issued: {pending_writes} writes, {pending_reads} reads",
        mib as u128 * 1_000_000 / write_us,
        mib as u128 * 1_000_000 / read_us
    );
    for token in &tokens {
        // SAFETY: our events, no longer used.
        let _ = unsafe { (efi::boot().close_event)(token.event) };
    }
    for buffer in buffers {
        // SAFETY: our pages, no longer used.
        let _ = unsafe { boot::free_pages(buffer, ASYNC_BYTES / 4096) };
    }
    for (h, _) in functions {
        boot::disconnect_controller(h, None, None)
            .map_err(|e| format!("DisconnectController: {e:?}"))?;
    }
    say!(
        "@@RESULT async_requests={} async_ok=1 pending_writes={pending_writes} pending_reads={pending_reads}",
        2 * ASYNC_REQUESTS
    );
    Ok(())
}
