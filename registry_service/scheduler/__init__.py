"""The scheduler inside the service: housekeeping jobs on intervals, run by exactly one
process at a time (the one holding the leadership lock), so no cron is needed."""
