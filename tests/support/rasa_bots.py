"""Whole Rasa 3 projects as file texts, for the Rasa import: Rasa's own starter bot (moodbot)
and an order-form bot with a form, custom actions, an action endpoint, and two things the
import cannot carry over (a Slack-only response variant, a rule conditioned on a slot)."""

from __future__ import annotations

MOODBOT_DOMAIN = """\
version: "3.1"

intents:
  - greet
  - goodbye
  - affirm
  - deny
  - mood_great
  - mood_unhappy
  - bot_challenge

responses:
  utter_greet:
  - text: "Hey! How are you?"
    buttons:
    - title: "great"
      payload: "/mood_great"
    - title: "super sad"
      payload: "/mood_unhappy"

  utter_cheer_up:
  - text: "Here is something to cheer you up:"
    image: "https://i.imgur.com/nGF1K8f.jpg"

  utter_did_that_help:
  - text: "Did that help you?"

  utter_happy:
  - text: "Great, carry on!"

  utter_goodbye:
  - text: "Bye"

  utter_iamabot:
  - text: "I am a bot, powered by Rasa."

session_config:
  session_expiration_time: 60
  carry_over_slots_to_new_session: true
"""

MOODBOT_NLU = """\
version: "3.1"

nlu:
- intent: greet
  examples: |
    - hey
    - hello
    - hi
    - hello there
    - good morning
    - moin

- intent: goodbye
  examples: |
    - cu
    - good by
    - cee you later
    - good night
    - bye
    - see you around

- intent: affirm
  examples: |
    - yes
    - y
    - indeed
    - of course
    - that sounds good
    - correct

- intent: deny
  examples: |
    - no
    - n
    - never
    - I don't think so
    - don't like that
    - not really

- intent: mood_great
  examples: |
    - perfect
    - great
    - amazing
    - feeling like a king
    - wonderful
    - I am feeling very good

- intent: mood_unhappy
  examples: |
    - my day was horrible
    - I am sad
    - I don't feel very well
    - I am disappointed
    - super sad
    - so sad

- intent: bot_challenge
  examples: |
    - are you a bot?
    - are you a human?
    - am I talking to a bot?
    - am I talking to a human?
    - who made you
    - what are you
"""

MOODBOT_RULES = """\
version: "3.1"

rules:

- rule: Say goodbye anytime
  steps:
  - intent: goodbye
  - action: utter_goodbye

- rule: Say 'I am a bot' anytime
  steps:
  - intent: bot_challenge
  - action: utter_iamabot
"""

MOODBOT_STORIES = """\
version: "3.1"

stories:

- story: happy path
  steps:
  - intent: greet
  - action: utter_greet
  - intent: mood_great
  - action: utter_happy

- story: sad path 1
  steps:
  - intent: greet
  - action: utter_greet
  - intent: mood_unhappy
  - action: utter_cheer_up
  - action: utter_did_that_help
  - intent: affirm
  - action: utter_happy

- story: sad path 2
  steps:
  - intent: greet
  - action: utter_greet
  - intent: mood_unhappy
  - action: utter_cheer_up
  - action: utter_did_that_help
  - intent: deny
  - action: utter_goodbye
"""

ORDER_DOMAIN = """\
version: "3.1"

intents:
  - greet
  - order
  - inform
  - goodbye

entities:
  - order_id
  - email

slots:
  order_id:
    type: text
    mappings:
    - type: from_entity
      entity: order_id
    - type: from_text
      conditions:
      - active_loop: order_form
        requested_slot: order_id
  email:
    type: text
    mappings:
    - type: from_entity
      entity: email
    - type: from_text
      conditions:
      - active_loop: order_form
        requested_slot: email
  vip:
    type: bool
    initial_value: false
    influence_conversation: true
    mappings:
    - type: from_intent
      intent: order
      value: true

forms:
  order_form:
    required_slots:
    - order_id
    - email

responses:
  utter_greet:
  - text: "Hi! I can take your order."
  - text: "Hello from Slack :wave:"
    channel: slack
  utter_vip_welcome:
  - text: "Welcome back, valued customer!"
  utter_ask_order_id:
  - text: "What is your order number?"
  utter_ask_email:
  - text: "What is your email?"
  utter_ask_order_form_email:
  - text: "Which email should the confirmation go to?"
  utter_submitted:
  - text: "Thanks! Order {order_id} is confirmed; we will write to {email}."
  utter_goodbye:
  - text: "Goodbye"

actions:
  - validate_order_form
  - action_submit_order

session_config:
  session_expiration_time: 30
  carry_over_slots_to_new_session: false
"""

ORDER_NLU = """\
version: "3.1"

nlu:
- intent: greet
  examples: |
    - hi
    - hello
    - hey there
    - good morning
    - hello bot
    - howdy

- intent: order
  examples: |
    - i want to place an order
    - order something
    - i'd like to buy
    - can i order
    - new order please
    - i need to order a product

- intent: inform
  examples: |
    - it's [A-1932](order_id)
    - order [B-2210](order_id)
    - [C-4471](order_id)
    - my email is [ana@example.com](email)
    - [bo@example.org](email)
    - use [cy@example.net](email)

- intent: goodbye
  examples: |
    - bye
    - goodbye
    - see you
    - cya
    - that's all
    - talk later
"""

ORDER_RULES = """\
version: "3.1"

rules:
- rule: activate order form
  steps:
  - intent: order
  - action: order_form
  - active_loop: order_form

- rule: submit order form
  condition:
  - active_loop: order_form
  steps:
  - action: order_form
  - active_loop: null
  - slot_was_set:
    - requested_slot: null
  - action: action_submit_order
  - action: utter_submitted

- rule: greet a vip
  condition:
  - slot_was_set:
    - vip: true
  steps:
  - intent: greet
  - action: utter_vip_welcome

- rule: greet
  steps:
  - intent: greet
  - action: utter_greet

- rule: bye
  steps:
  - intent: goodbye
  - action: utter_goodbye
"""

ORDER_ENDPOINTS = """\
action_endpoint:
  url: "http://localhost:5055/webhook"
"""


def moodbot() -> dict[str, str]:
    """The keyword arguments of ``import_rasa`` for Rasa's moodbot."""
    return {
        "name": "moodbot",
        "domain": MOODBOT_DOMAIN,
        "nlu": MOODBOT_NLU,
        "rules": MOODBOT_RULES,
        "stories": MOODBOT_STORIES,
    }


def order_bot() -> dict[str, str]:
    """The keyword arguments of ``import_rasa`` for the order-form bot."""
    return {
        "name": "orders",
        "domain": ORDER_DOMAIN,
        "nlu": ORDER_NLU,
        "rules": ORDER_RULES,
        "endpoints": ORDER_ENDPOINTS,
    }
