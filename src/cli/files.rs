//! The attachment subcommands: `tern send-file CONV PATH` (encrypt, upload
//! with a progress bar, send the pointer end-to-end encrypted) and `tern
//! fetch CONV SEQ [-o FILE]` (download the attachment of message SEQ,
//! checking every chunk and the digest, into FILE or the sender's file
//! name in the current directory).

use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
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
        let result = upload(&client, args.conversation, &args.path).await;
        client.close().await;
        result
    })
}

async fn upload(client: &SecureClient, conversation: u64, path: &Path) -> Result<(), String> {
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
        .send_attachment(conversation, path, &mut progress)
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
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Some(_)) => continue,
            _ => {
                return Err(format!(
                    "no message {seq} in conversation {conversation} on this device; \
                     check the numbers with `tern history {conversation}`"
                ))
            }
        }
    }
}
