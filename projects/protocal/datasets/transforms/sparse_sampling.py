# owned by the datasets helper
