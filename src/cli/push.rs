//! `tern push register URL [--gateway]` / `tern push unregister`: where the
//! server wakes this device while it has no connection (docs/PROTOCOL.md
//! §4.13): a Web Push / UnifiedPush endpoint URL (https), or with
//! `--gateway` a token for the server's push gateway. Uses the plain
//! transport client, so it works while `tern listen` holds the state
//! directory.

use tern_client::Client;
use tern_proto::body::push::PushEndpoint;

use super::chat::options;
use super::Connection;

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    #[command(subcommand)]
    command: PushCommand,
}

#[derive(clap::Subcommand, Debug)]
enum PushCommand {
    /// Register (or replace) this device's push endpoint.
    Register(RegisterArgs),
    /// Remove this device's push endpoint.
    Unregister(UnregisterArgs),
}

#[derive(clap::Args, Debug)]
struct RegisterArgs {
    #[command(flatten)]
    conn: Connection,
    /// The Web Push endpoint URL (https://...), or the gateway token with --gateway.
    endpoint: String,
    /// ENDPOINT is a token for the server's push gateway (APNs/FCM behind it).
    #[arg(long)]
    gateway: bool,
}

#[derive(clap::Args, Debug)]
struct UnregisterArgs {
    #[command(flatten)]
    conn: Connection,
}

/// Runs `tern push`.
pub fn run(args: PushArgs) -> Result<(), String> {
    super::init_client_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let conn = match &args.command {
            PushCommand::Register(r) => &r.conn,
            PushCommand::Unregister(u) => &u.conn,
        };
        let client = Client::connect(options(conn)?)
            .await
            .map_err(|e| e.to_string())?;
        let result = match args.command {
            PushCommand::Register(r) => register(&client, r).await,
            PushCommand::Unregister(_) => client
                .unregister_push()
                .await
                .map(|()| println!("push endpoint removed"))
                .map_err(|e| e.to_string()),
        };
        client.close().await;
        result
    })
}

async fn register(client: &Client, args: RegisterArgs) -> Result<(), String> {
    let endpoint = match args.gateway {
        true => PushEndpoint::Gateway {
            token: args.endpoint,
        },
        false => PushEndpoint::WebPush { url: args.endpoint },
    };
    client
        .register_push(endpoint)
        .await
        .map_err(|e| e.to_string())?;
    println!("push endpoint registered");
    Ok(())
}
