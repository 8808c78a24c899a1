"""The embedded broker (config/broker.py): kombu's filesystem transport with whole-file
writes, so that a worker polling the folder never reads a message half written."""

import logging
import os
from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import filesystem

from config import broker


@pytest.fixture
def channel(tmp_path):
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)}
    with Connection(
        "filesystem://", transport="config.broker:Transport", transport_options=options
    ) as conn:
        yield conn.default_channel


def test_the_embedded_broker_is_the_whole_file_transport(settings):
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("CELERY_BROKER_URL names a server broker for this run")
    assert settings.CELERY_BROKER_TRANSPORT == "config.broker:Transport"


def test_a_message_goes_through_whole(channel):
    channel._put("celery", {"body": "there is work", "n": 1})

    assert channel._get("celery") == {"body": "there is work", "n": 1}
    with pytest.raises(Empty):
        channel._get("celery")


def test_a_reader_polling_while_a_message_is_written_sees_nothing(channel, monkeypatch):
    seen_while_writing = []
    rename = os.replace

    def replace(src, dst):
        # The moment before the message takes its name: the file is complete but hidden.
        try:
            seen_while_writing.append(channel._get("celery"))
        except Empty:
            seen_while_writing.append("nothing")
        rename(src, dst)

    monkeypatch.setattr(broker.os, "replace", replace)
    channel._put("celery", {"body": "there is work"})

    assert seen_while_writing == ["nothing"]
    assert channel._get("celery") == {"body": "there is work"}


def test_an_unreadable_message_is_dropped_not_fatal(channel, tmp_path, caplog):
    # What kombu's own writer leaves for an instant: the file created, nothing written yet.
    (tmp_path / "1_half-written.celery.msg").write_bytes(b"")
    stock = filesystem.Channel._get
    (tmp_path / "0_half-written.celery.msg").write_bytes(b"")
    with pytest.raises(ValueError):  # what killed the worker before
        stock(channel, "celery")

    with caplog.at_level(logging.WARNING, logger="config.broker"), pytest.raises(Empty):
        channel._get("celery")
    assert "Dropped an unreadable message" in caplog.text

    channel._put("celery", {"body": "next"})
    assert channel._get("celery") == {"body": "next"}


def test_a_channel_makes_the_folders_it_is_given(tmp_path):
    # A fresh VAR_DIR: settings make no folder, the first process to use the broker does.
    broker = tmp_path / "var" / "broker"
    options = {
        "data_folder_in": str(broker / "out"),
        "data_folder_out": str(broker / "out"),
        "processed_folder": str(broker / "processed"),
        "control_folder": str(broker / "control"),
    }
    with Connection(
        "filesystem://", transport="config.broker:Transport", transport_options=options
    ) as conn:
        conn.default_channel._put("celery", {"body": "there is work"})

    assert sorted(path.name for path in broker.iterdir()) == ["control", "out", "processed"]
