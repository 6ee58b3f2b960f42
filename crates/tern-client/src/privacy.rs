//! The transport client's privacy calls (issue 10, "who may reach me"):
//! reading and changing both privacy settings ([`Client::privacy`],
//! [`Client::update_privacy`]) and accepting a message request
//! ([`Client::accept_request`]). The end-to-end side of requests (no
//! receipts while pending, the requests list) is
//! [`crate::secure::SecureClient::requests`].

use tern_proto::body::privacy::SetPrivacy;
use tern_proto::body::reach::{AcceptRequest, GetPrivacy, Privacy};
use tern_proto::{DirectStarts, GroupAdds};

use crate::sdk::{Client, ClientError};

impl Client {
    /// This account's privacy settings: who may add it to groups
    /// (default [`GroupAdds::Contacts`]) and who may start a direct
    /// conversation with it (default [`DirectStarts::Everyone`], as in
    /// Signal and WhatsApp, with strangers' conversations arriving as
    /// message requests).
    pub async fn privacy(&self) -> Result<Privacy, ClientError> {
        self.request(GetPrivacy).await
    }

    /// Changes the settings given and leaves the others as they are
    /// (`None` = unchanged). Calling it with neither changes nothing and
    /// sends nothing.
    pub async fn update_privacy(
        &self,
        groups: Option<GroupAdds>,
        direct_starts: Option<DirectStarts>,
    ) -> Result<(), ClientError> {
        if groups.is_none() && direct_starts.is_none() {
            return Ok(());
        }
        self.request(SetPrivacy::change(groups, direct_starts))
            .await?;
        Ok(())
    }

    /// Sets who may start a direct conversation with this account; others
    /// are refused with `ConsentRequired` (existing conversations stay).
    pub async fn set_direct_starts(&self, setting: DirectStarts) -> Result<(), ClientError> {
        self.update_privacy(None, Some(setting)).await
    }

    /// Accepts the message request of direct conversation `conversation_id`
    /// on the server: its creator becomes this account's contact. Prefer
    /// [`crate::secure::SecureClient::accept_request`], which also sends the
    /// receipts held back meanwhile.
    ///
    /// # Errors
    /// `NotFound` (not a conversation of this account's), `Forbidden` (not
    /// a direct conversation).
    pub async fn accept_request(&self, conversation_id: u64) -> Result<(), ClientError> {
        self.request(AcceptRequest { conversation_id }).await?;
        Ok(())
    }
}
