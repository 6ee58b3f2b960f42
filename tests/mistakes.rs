//! Honest answers to ordinary mistakes at the transport level: adding a
//! member twice or removing a non-member is refused with a typed error and
//! changes nothing. (The CLI-level checks are in `tests/cli.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::TestServer;
use tern_proto::fb::ErrorCode;
use tern_proto::ConversationKind;

#[tokio::test]
async fn membership_mistakes_are_refused_and_change_nothing() {
    let server = TestServer::start(1);
    let alice = server.register("alice").await;
    let _bob = server.register("bob").await;
    let _carol = server.register("carol").await;
    let group = alice
        .create_conversation(ConversationKind::Group, &["bob"])
        .await
        .unwrap();
    let twice = alice.add_members(group.id, &["carol", "bob"]).await;
    let error = twice.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidArgument));
    assert!(error
        .to_string()
        .contains("already a member of this group: bob"));
    let stranger = alice.remove_members(group.id, &["carol"]).await;
    let error = stranger.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidArgument));
    assert!(error
        .to_string()
        .contains("not a member of this group: carol"));
    // Nothing changed: carol was not added along with the refused bob.
    let info = alice.add_members(group.id, &["carol"]).await.unwrap();
    assert_eq!(info.members, ["alice", "bob", "carol"]);
}
