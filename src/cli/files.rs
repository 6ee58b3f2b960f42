//! The attachment subcommands: `tern send-file CONV PATH` (encrypt, upload
//! with a progress bar, send the pointer end-to-end encrypted, with an
//! optional thumbnail, dimensions, duration and content type) and `tern
//! fetch CONV SEQ [-o FILE] [--thumbnail]` (download the attachment of
//! message SEQ, checking every chunk and the digest, into FILE or the
//! sender's file name in the current directory; or save its thumbnail).

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tern_client::attachment::send::AttachmentDetails;
use tern_client::content::{AttachmentPointer, Content};
use tern_client::secure::SecureClient;

use super::chat::options;
use super::Connection;

/// How long `tern fetch` waits for a message not yet on this device.
const CATCH_UP: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct SendFileArgs {
    #[command(flatten)]
    conn: Connection,
    /// Conversation id.
    conversation: u64,
    /// The file to send (any size up to the server's max_attachment_bytes).
    path: PathBuf,
    /// A small preview carried in the message itself (JPEG or WebP, at
    /// most 16 KiB), which receivers see before downloading.
    #[arg(long, value_name = "FILE")]
    thumbnail: Option<PathBuf>,
    /// Width and height in pixels, for images and video.
    #[arg(long, value_name = "WxH", value_parser = parse_dimensions)]
    dimensions: Option<(u32, u32)>,
    /// Length in milliseconds, for audio and video.
    #[arg(long, value_name = "MS")]
    duration_ms: Option<u32>,
    /// The MIME type [default: from the file name's extension]; audio/...
    /// sends a voice message.
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
}

/// `1920x1080` as (width, height).
fn parse_dimensions(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{text:?} is not WIDTHxHEIGHT, e.g. 1920x1080"))?;
    let pixels = |n: &str| match n.parse::<u32>() {
        Ok(0) | Err(_) => Err(format!(
            "{n:?} in {text:?} is not a whole positive number of pixels"
        )),
        Ok(n) => Ok(n),
    };
    Ok((pixels(w)?, pixels(h)?))
}

#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    conn: Connection,
    /// Conversation id.
    conversation: u64,
    /// The seq of the message carrying the attachment (see `tern history`).
    seq: u64,
    /// Where to write the file (default: the sender's file name, here).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Save only the preview the message carries (nothing is downloaded),
    /// to -o FILE or the sender's file name with `.thumbnail` appended.
    #[arg(long)]
    thumbnail: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    super::init_client_logging();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Runs `tern send-file`.
pub fn send_file(args: SendFileArgs) -> Result<(), String> {
    runtime()?.block_on(async {
        let client = SecureClient::connect(options(&args.conn)?)
            .await
            .map_err(|e| e.to_string())?;
        let result = upload(&client, &args).await;
        client.close().await;
        result
    })
}

/// What `args` tell of the file beyond its bytes.
fn details(args: &SendFileArgs) -> Result<AttachmentDetails, String> {
    let thumbnail = match &args.thumbnail {
        Some(path) => std::fs::read(path)
            .map_err(|e| format!("cannot read the thumbnail {}: {e}", path.display()))?,
        None => Vec::new(),
    };
    let (width, height) = args.dimensions.unwrap_or_default();
    Ok(AttachmentDetails {
        thumbnail,
        width,
        height,
        duration_ms: args.duration_ms.unwrap_or_default(),
        content_type: args.content_type.clone(),
    })
}

async fn upload(client: &SecureClient, args: &SendFileArgs) -> Result<(), String> {
    let (conversation, path) = (args.conversation, &args.path);
    let prepared = client
        .prepare_attachment_with(path, details(args)?)
        .map_err(|e| e.to_string())?;
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let sent = client
        .send_prepared(conversation, prepared, &mut progress)
        .await
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    println!(
        "sent {} ({} bytes, {}) to conversation {conversation} as seq {}",
        sent.pointer.safe_file_name(),
        sent.pointer.size,
        sent.pointer.content_type,
        sent.sent.receipt.seq
    );
    Ok(())
}

/// Runs `tern fetch`.
pub fn fetch(args: FetchArgs) -> Result<(), String> {
    runtime()?.block_on(async {
        let client = SecureClient::connect(options(&args.conn)?)
            .await
            .map_err(|e| e.to_string())?;
        let result = download(&client, &args).await;
        client.close().await;
        result
    })
}

async fn download(client: &SecureClient, args: &FetchArgs) -> Result<(), String> {
    let pointer = find(client, args.conversation, args.seq).await?;
    if args.thumbnail {
        return save_thumbnail(&pointer, args);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(pointer.safe_file_name()));
    // The name may come from the sender: never replace a file.
    if out.exists() {
        return Err(format!(
            "{} exists; choose another name with -o FILE",
            out.display()
        ));
    }
    let size = client
        .download_attachment(&pointer, &out)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "saved {} ({size} bytes, {})",
        out.display(),
        pointer.content_type
    );
    Ok(())
}

/// `tern fetch --thumbnail`: writes the preview the pointer carries.
fn save_thumbnail(pointer: &AttachmentPointer, args: &FetchArgs) -> Result<(), String> {
    if pointer.thumbnail.is_empty() {
        return Err(format!("message {} carries no thumbnail", args.seq));
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.thumbnail", pointer.safe_file_name())));
    if out.exists() {
        return Err(format!(
            "{} exists; choose another name with -o FILE",
            out.display()
        ));
    }
    std::fs::write(&out, &pointer.thumbnail)
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!(
        "saved the thumbnail {} ({} bytes)",
        out.display(),
        pointer.thumbnail.len()
    );
    Ok(())
}

/// The attachment pointer of message `seq`, receiving for up to
/// [`CATCH_UP`] while it is not on this device yet.
async fn find(
    client: &SecureClient,
    conversation: u64,
    seq: u64,
) -> Result<AttachmentPointer, String> {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        let found = client
            .messages()
            .get(conversation, seq)
            .map_err(|e| e.to_string())?;
        if let Some(found) = found {
            return match found.message.content {
                Content::Attachment(pointer) => Ok(*pointer),
                _ => Err(format!(
                    "message {seq} of conversation {conversation} carries no attachment"
                )),
            };
        }
        // Messages that come on the way are stored, not shown: the next
        // `tern listen` shows them.
        // Messages that come on the way are stored, not shown: the next
        // `tern listen` shows them.
        match tokio::time::timeout_at(deadline, client.receive_unannounced()).await {
            Ok(Some(())) => continue,
            _ => {
                return Err(format!(
                    "no message {seq} in conversation {conversation} on this device; \
                     check the numbers with `tern history {conversation}`"
                ))
            }
        }
    }
}
