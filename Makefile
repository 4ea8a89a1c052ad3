# The two commands of the README, and the steps they are made of.
SHELL := /bin/bash
INVENTORY ?= inventories/sandbox

.PHONY: deploy test setup lint sanity unit integration molecule clean

## deploy: set up the controller and run site.yml against $(INVENTORY)
deploy: setup
	scripts/deploy.sh $(INVENTORY)

## test: set up everything and run every test stage (what CI runs)
test:
	tests/run.sh

setup:
	scripts/setup.sh

lint sanity unit integration molecule: setup
	tests/run.sh $@

clean:
	rm -rf .venv .ansible tests/output
