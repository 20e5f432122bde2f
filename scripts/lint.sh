#!/usr/bin/env bash
echo "lint: not set up yet"
