"""In-memory DAVE clients (real davey sessions) wired to a DaveGroup.

Each client handles the gateway's frames the way discord.py 2.7.1 does: it slices
binary frames at the same offsets, lets exceptions from op 25 and op 27 escape
(in discord.py they end the voice connection, so here they fail the test), and
answers a failed op 29 or op 30 with op 31, a reinit and a new key package.
Clients made with ``expects_users=True`` also pass the ids they were told about,
as discord.js does, so an Add for a user nobody announced fails the test.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable

import davey

from voicesim.emulator._dave_group import CloseMember, DaveGroup, DaveOutput
from voicesim.protocol._voice_gateway import (
    DaveMlsCommitWelcome,
    DaveMlsInvalidCommitWelcome,
    DaveMlsKeyPackage,
    DaveTransitionReady,
    decode_voice_message,
    encode_voice_message,
)

CHANNEL_ID = 1234567890123456789
OPUS_FRAME = bytes(range(120))
_OPERATION_TYPES = {
    0: davey.ProposalsOperationType.append,
    1: davey.ProposalsOperationType.revoke,
}


class Client:
    """One user's davey session and the frames it has queued for the gateway."""

    def __init__(self, user_id: int, *, expects_users: bool) -> None:
        self.user_id = user_id
        self.expects_users = expects_users
        self.known_users: set[int] = set()
        self.session = davey.DaveSession(1, user_id, CHANNEL_ID)
        self.outbox: list[str | bytes] = []
        self.closed: int | None = None
        self.failures = 0
        self.executed: list[int] = []
        self.seq = -1

    def send(self, message: object) -> None:
        frame = encode_voice_message(message)  # type: ignore[arg-type]
        self.outbox.append(frame)

    def on_session_description(self) -> None:
        """op 4 with DAVE: both libraries create the session and send op 26 at once."""
        self.send(DaveMlsKeyPackage(data=self.session.get_serialized_key_package()))

    def _recover(self, transition_id: int) -> None:
        self.failures += 1
        self.send(DaveMlsInvalidCommitWelcome(transition_id=transition_id))
        self.session.reinit(1, self.user_id, CHANNEL_ID)
        self.on_session_description()

    def deliver(self, frame: str | bytes) -> None:
        if isinstance(frame, str):
            self._deliver_json(json.loads(frame))
            return
        self.seq = int.from_bytes(frame[0:2], "big")
        op = frame[2]
        if op == 25:
            self.session.set_external_sender(frame[3:])
        elif op == 27:
            expected = sorted(self.known_users) if self.expects_users else None
            result = self.session.process_proposals(
                _OPERATION_TYPES[frame[3]], frame[4:], expected
            )
            if result is not None:
                self.send(
                    DaveMlsCommitWelcome(data=result.commit + (result.welcome or b""))
                )
        elif op in (29, 30):
            transition_id = int.from_bytes(frame[3:5], "big")
            try:
                if op == 29:
                    self.session.process_commit(frame[5:])
                else:
                    self.session.process_welcome(frame[5:])
            except Exception:
                self._recover(transition_id)
                return
            if transition_id != 0:
                self.send(DaveTransitionReady(transition_id=transition_id))
        else:
            raise AssertionError(f"unexpected binary op {op}")

    def _deliver_json(self, frame: dict[str, object]) -> None:
        d = frame["d"]
        assert isinstance(d, dict)
        if frame["op"] == 21:
            if d["transition_id"] == 0:
                self.executed.append(0)
            else:
                self.send(DaveTransitionReady(transition_id=d["transition_id"]))
        elif frame["op"] == 22:
            self.executed.append(int(d["transition_id"]))
        elif frame["op"] == 24:
            if d["epoch"] == 1:
                self.session.reinit(1, self.user_id, CHANNEL_ID)
                self.on_session_description()
        else:
            raise AssertionError(f"unexpected JSON op {frame['op']}")


class Harness:
    """A DaveGroup and its clients; the gateway's frames are delivered at once."""

    def __init__(self, group: DaveGroup | None = None) -> None:
        self.group = group or DaveGroup(CHANNEL_ID)
        self.clients: dict[int, Client] = {}
        self.now = 0.0
        self.seq = 0
        self.sent: list[tuple[int, object]] = []
        # Rewrites a message on its way to a client, to simulate corruption.
        self.tamper: Callable[[int, object], object] | None = None

    def route(self, outputs: Iterable[DaveOutput]) -> None:
        for user_id, message in outputs:
            self.sent.append((user_id, message))
            client = self.clients.get(user_id)
            assert client is not None, f"output for unknown user {user_id}"
            assert client.closed is None, f"output for closed user {user_id}"
            if isinstance(message, CloseMember):
                client.closed = message.code
                client.outbox.clear()
                self.route(self.group.remove_member(user_id, self.now))
                continue
            if self.tamper is not None:
                message = self.tamper(user_id, message)  # type: ignore[assignment]
            self.seq += 1
            client.deliver(encode_voice_message(message, seq=self.seq))

    def join(self, user_id: int, *, expects_users: bool = False) -> Client:
        client = Client(user_id, expects_users=expects_users)
        # op 11, as the gateway sends it: the newcomer learns who is here, and
        # everyone else learns the newcomer, before any key package exists.
        client.known_users = set(self.clients)
        for other in self.clients.values():
            other.known_users.add(user_id)
        self.clients[user_id] = client
        client.on_session_description()
        self.route(self.group.add_member(user_id, self.now))
        return client

    def leave(self, user_id: int) -> None:
        client = self.clients.pop(user_id)
        client.closed = 1000
        for other in self.clients.values():
            other.known_users.discard(user_id)
        self.route(self.group.remove_member(user_id, self.now))

    def inject(self, user_id: int, frame: bytes | str) -> None:
        """Deliver one client-to-server frame to the gateway now."""
        message, _ = decode_voice_message(frame, from_server=False)
        self.route(self.group.receive(user_id, message, self.now))  # type: ignore[arg-type]

    def flush(self, user_id: int) -> None:
        """Deliver everything this client has queued, including what that provokes."""
        client = self.clients[user_id]
        while client.outbox and client.closed is None:
            self.inject(user_id, client.outbox.pop(0))

    def reset(self, user_id: int) -> None:
        """The client re-initialises on its own and says so with op 31 (discord.js
        does after repeated decrypt failures). Its earlier frames go first, and the
        gateway hears of the reset before it can send the client anything else."""
        self.flush(user_id)
        client = self.clients[user_id]
        client.send(DaveMlsInvalidCommitWelcome(transition_id=0))
        client.session.reinit(1, user_id, CHANNEL_ID)
        client.on_session_description()
        self.flush(user_id)

    def send_next(self, user_id: int) -> None:
        """Deliver only the oldest frame this client has queued."""
        self.inject(user_id, self.clients[user_id].outbox.pop(0))

    def pump(
        self, *, drop: Iterable[type] = (), rng: random.Random | None = None
    ) -> None:
        """Deliver queued client frames until all clients are quiet.

        Clients take turns in join order, each sending everything it has queued;
        with ``rng``, each step sends the oldest frame of a randomly chosen client,
        which interleaves commits the way independent connections do.
        """
        dropped = tuple(drop)
        for _ in range(10000):
            ready = [c for c in self.clients.values() if c.outbox and c.closed is None]
            if not ready:
                return
            chosen = [rng.choice(ready)] if rng is not None else ready
            for client in chosen:
                while client.outbox and client.closed is None:
                    frame = client.outbox.pop(0)
                    message, _ = decode_voice_message(frame, from_server=False)
                    if not isinstance(message, dropped):
                        self.route(
                            self.group.receive(client.user_id, message, self.now)
                        )  # type: ignore[arg-type]
                    if rng is not None:
                        break
        raise AssertionError("clients never went quiet")

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.route(self.group.tick(self.now))

    def active(self) -> list[Client]:
        return [c for c in self.clients.values() if c.closed is None]

    def assert_converged(self, *, invalid_commits: int = 0) -> None:
        """Every connected client is in the gateway's group, at its epoch and leaf."""
        group = self.group
        assert group.stats.invalid_commits == invalid_commits
        in_tree = sorted(str(u) for u in group.leaves if u is not None)
        for client in self.active():
            session = client.session
            assert session.status == davey.SessionStatus.active, client.user_id
            assert session.epoch == group.epoch, (client.user_id, session.epoch)
            assert session.own_leaf_index == group.leaf_of(client.user_id)
            assert sorted(session.get_user_ids()) == in_tree
        codes = {c.session.voice_privacy_code for c in self.active()}
        assert len(codes) == 1

    def assert_media_flows(self) -> None:
        """A frame each member encrypts decrypts at every other member."""
        members = self.active()
        for sender in members:
            frame = OPUS_FRAME + sender.user_id.to_bytes(8, "big")
            sealed = sender.session.encrypt_opus(frame)
            assert sealed != frame and sealed.endswith(b"\xfa\xfa")
            for receiver in members:
                if receiver is not sender:
                    opened = receiver.session.decrypt(
                        sender.user_id, davey.MediaType.audio, sealed
                    )
                    assert opened == frame
