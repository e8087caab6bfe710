"""Test doubles (the hailo_platform double lives here)."""
