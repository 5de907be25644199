"""Helpers the tests share: local servers, record factories and fictional fixtures."""
