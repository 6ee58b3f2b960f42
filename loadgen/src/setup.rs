//! Setting up a scenario: registering many users concurrently (each with a
//! fresh Ed25519 key, named `lg{run}-{tag}{i}`), and pipelining requests on
//! one connection (conversation creation, backlog sends).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern_client::connection::RawConnection;
use tern_proto::body::{conversations, privacy};
use tern_proto::{Body, ConversationKind, Frame, GroupAdds};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::conn::{call, register, user_name, Device, Endpoints};
use crate::error::{LoadError, Result};
use crate::progress::Progress;

/// Registers users `tag0..tag{count}` with at most `concurrency` in flight;
/// fails on the first refusal (a setup that half worked measures nothing).
pub async fn register_many(
    endpoints: &Arc<Endpoints>,
    run: &str,
    tag: &str,
    count: usize,
    concurrency: usize,
    quiet: bool,
) -> Result<Vec<(Device, RawConnection)>> {
    let progress = Progress::new("register", Some(count as u64), quiet);
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    let ticker = progress.ticker(move || (counter.load(Ordering::Relaxed), String::new()));
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let (endpoints, limit, done) = (endpoints.clone(), limit.clone(), done.clone());
        let user = user_name(run, tag, i);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let mut conn = endpoints.connect(i).await?;
            let device = register(&mut conn, &user, endpoints.timeout).await?;
            // Load accounts join each other's groups without invitations.
            let everyone = privacy::SetPrivacy::change(Some(GroupAdds::Everyone), None);
            call(&mut conn, 2, everyone, "privacy", endpoints.timeout).await?;
            done.fetch_add(1, Ordering::Relaxed);
            Ok::<_, LoadError>((i, device, conn))
        });
    }
    let result = collect(&mut tasks, count).await;
    ticker.stop();
    result
}

async fn collect(
    tasks: &mut JoinSet<Result<(usize, Device, RawConnection)>>,
    count: usize,
) -> Result<Vec<(Device, RawConnection)>> {
    let mut slots: Vec<Option<(Device, RawConnection)>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, device, conn) = joined.map_err(|e| LoadError::Task(e.to_string()))??;
        if let Some(slot) = slots.get_mut(i) {
            *slot = Some((device, conn));
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

/// Sends `frames` on `conn` keeping at most `window` unanswered, handing
/// each answer to `on_answer(request_id, body)`. Pushes (request id 0) are
/// skipped; an `Error` answer fails the whole batch.
pub async fn pipeline(
    conn: &mut RawConnection,
    frames: impl IntoIterator<Item = Frame>,
    window: usize,
    what: &str,
    timeout: Duration,
    mut on_answer: impl FnMut(u64, Body),
) -> Result<u64> {
    let mut queue = frames.into_iter().peekable();
    let (mut in_flight, mut answered) = (0usize, 0u64);
    while in_flight > 0 || queue.peek().is_some() {
        while in_flight < window.max(1) {
            let Some(frame) = queue.next() else { break };
            conn.sender.frame(&frame).await?;
            in_flight += 1;
        }
        let next = tokio::time::timeout(timeout, conn.receiver.next())
            .await
            .map_err(|_| LoadError::Timeout {
                what: what.to_owned(),
                secs: timeout.as_secs(),
            })??;
        let Some(frame) = next else {
            return Err(LoadError::Closed(what.to_owned()));
        };
        if frame.request_id == 0 {
            continue;
        }
        on_answer(frame.request_id, crate::conn::refused(what, frame.body)?);
        in_flight = in_flight.saturating_sub(1);
        answered += 1;
    }
    Ok(answered)
}

/// Most members named in one request (the server's limit is 2,000).
pub const MEMBERS_PER_REQUEST: usize = 2_000;

/// A conversation to create: by the device at `creator`, with `members`.
pub struct CreateJob {
    pub creator: usize,
    pub kind: ConversationKind,
    pub members: Vec<String>,
}

/// Creates the conversations concurrently (each creator's connection is lent to
/// one task and given back) and returns their ids in job order. Groups larger
/// than one request allows get the rest of their members with AddMembers.
pub async fn create_conversations(
    devices: &mut [Option<(Device, RawConnection)>],
    jobs: Vec<CreateJob>,
    concurrency: usize,
    timeout: Duration,
) -> Result<Vec<u64>> {
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let count = jobs.len();
    for (j, job) in jobs.into_iter().enumerate() {
        let Some((device, mut conn)) = devices.get_mut(job.creator).and_then(Option::take) else {
            return Err(LoadError::Usage(format!(
                "device {} creates two conversations at once",
                job.creator
            )));
        };
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let id = create_one(&mut conn, job.kind, job.members, timeout).await;
            (j, job.creator, device, conn, id)
        });
    }
    let mut ids = vec![0u64; count];
    while let Some(joined) = tasks.join_next().await {
        let (j, creator, device, conn, id) = joined.map_err(|e| LoadError::Task(e.to_string()))?;
        if let Some(slot) = devices.get_mut(creator) {
            *slot = Some((device, conn));
        }
        if let Some(slot) = ids.get_mut(j) {
            *slot = id?;
        }
    }
    Ok(ids)
}

async fn create_one(
    conn: &mut RawConnection,
    kind: ConversationKind,
    members: Vec<String>,
    timeout: Duration,
) -> Result<u64> {
    let mut chunks = members.chunks(MEMBERS_PER_REQUEST);
    let first = chunks.next().map(<[String]>::to_vec).unwrap_or_default();
    let create = conversations::CreateConversation {
        kind,
        members: first,
    };
    let id = call(conn, 2, create, "conversation creation", timeout)
        .await?
        .conversation_id;
    for (n, chunk) in chunks.enumerate() {
        let add = conversations::AddMembers {
            conversation_id: id,
            members: chunk.to_vec(),
        };
        call(conn, 3 + n as u64, add, "adding group members", timeout).await?;
    }
    Ok(id)
}
