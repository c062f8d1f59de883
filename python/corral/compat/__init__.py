"""Facades that let code written for other engines run on Corral."""
