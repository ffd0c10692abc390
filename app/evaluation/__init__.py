"""`kilowatch eval`: the detectors scored on labelled simulator scenarios, in process or through MQTT."""
